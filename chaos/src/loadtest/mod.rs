//! The main job: the load engine ([`load`]), the reports it renders ([`report`], written by
//! [`output`]), the command-line profile ([`cli`]) and `compare` ([`compare`]), which starts both
//! services ([`services`]) and measures them end to end, mixed or each endpoint alone
//! ([`capacity`]), or over a ladder of body sizes ([`sweep`]).

pub mod capacity;
pub mod cli;
pub mod compare;
pub mod load;
pub mod output;
pub mod report;
pub mod services;
pub mod sweep;
