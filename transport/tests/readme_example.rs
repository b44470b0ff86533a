//! The README's usage example runs, and the README shows it as it is.
#![cfg(not(loom))]

#[path = "../examples/own_service.rs"]
mod own_service;

#[test]
fn the_readme_example_runs() {
    own_service::main().unwrap();
}

#[test]
fn the_readme_shows_the_example_as_it_is() {
    let readme = include_str!("../../README.md");
    let example = include_str!("../examples/own_service.rs");
    let body = example
        .split_once("\nuse ")
        .map(|(_, rest)| format!("use {rest}"))
        .expect("the example has imports");
    assert!(
        readme.contains(&body),
        "README.md must quote transport/examples/own_service.rs from its first `use` on"
    );
}
