//! The services (users-service and gateway) as child processes: one started, awaited, and
//! stopped ([`service`]), and both supervised through a chaos scenario ([`supervisor`]), each
//! named by its [`role`]; [`python`] prepares the Python users-service.

pub mod python;
pub mod role;
pub mod service;
pub mod supervisor;
