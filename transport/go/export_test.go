package shmbridge

// What the example in package shmbridge_test uses of this package's test helpers.

// StartUsersService starts the Rust producer for a test (see startUsersService).
var StartUsersService = startUsersService

// Socket is the service's control socket name.
func (s *usersService) Socket() string { return s.socket }
