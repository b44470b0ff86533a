//! Replays the request_params fuzz seeds and minimised crashes through the checker the target
//! calls, so `cargo test` on stable re-checks them.

use std::path::Path;

use shmbridge_server::testing::check_query_text;

#[test]
fn request_params_seeds_and_regressions() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut replayed = 0;
    for kind in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(kind).join("request_params")) else {
            continue;
        };
        for entry in entries {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            if let Ok(text) = std::str::from_utf8(&bytes) {
                check_query_text(text);
            }
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no committed seeds");
}
