//! Which of the two supervised services a process is.

use std::fmt;

use serde::Serialize;

/// One of the two supervised services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    UsersService,
    Gateway,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::UsersService, Role::Gateway];

    pub fn name(self) -> &'static str {
        match self {
            Role::UsersService => "users-service",
            Role::Gateway => "gateway",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
