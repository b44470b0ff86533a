package shmbridge

import "testing"

// A name with a '/' is a file, as transport/src/fdpass/socket.rs reads it, even one starting with
// the '@' that Go's SockaddrUnix takes for abstract; any other name is abstract.
func TestASocketNameStandsForTheAddressTheRustSideBinds(t *testing.T) {
	for name, want := range map[string]string{
		"shmbridge-users-1-2":       "@shmbridge-users-1-2",
		"/run/shmbridge/users.sock": "/run/shmbridge/users.sock",
		"./users.sock":              "./users.sock",
		"@run/users.sock":           "./@run/users.sock",
	} {
		if got := socketAddress(name).Name; got != want {
			t.Errorf("%q: %q, want %q", name, got, want)
		}
	}
}
