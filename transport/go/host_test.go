package shmbridge

import (
	"os"
	"testing"
)

// A producer in a PID namespace below this process's writes the pid it has there into the
// header: the last NSpid entry.
func TestTheInnermostPidIsTheLastOfNSpid(t *testing.T) {
	for status, want := range map[string]uint32{
		"Name:\tusers-service\nTgid:\t4321\nNSpid:\t4321\t17\t1\nNSpgid:\t4321\n": 1,
		"NSpid:\t88\n": 88,
	} {
		if got, err := parseInnermostPid(status); err != nil || got != want {
			t.Errorf("%q: %d, %v; want %d", status, got, err, want)
		}
	}
	for _, status := range []string{"Name:\tx\n", "NSpid:\n", "NSpid:\tx\n"} {
		if got, err := parseInnermostPid(status); err == nil {
			t.Errorf("%q: %d, want an error", status, got)
		}
	}
	own := uint32(os.Getpid())
	if got, err := innermostPid(own); err != nil || got != own {
		t.Errorf("this process: %d, %v; want %d", got, err, own)
	}
}
