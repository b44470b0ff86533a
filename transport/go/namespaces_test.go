package shmbridge

// The real producer and this client in different PID namespaces (unshare --pid, which needs
// root; elsewhere these tests skip): each attaches, and the client holds slots under the name the
// producer's reaper knows it by, as transport/tests/fdpass_peers.rs checks for the Rust peer.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// pidNamespace runs a command as the first process of a new PID namespace, killed with it.
var pidNamespace = []string{"unshare", "--pid", "--fork", "--kill-child"}

// childSocket, in a child process's environment, makes TestPeerChild attach to that socket.
const childSocket = "SHMBRIDGE_GO_TEST_PEER_SOCKET"

func skipWithoutPIDNamespaces(t *testing.T) {
	t.Helper()
	if out, err := exec.Command(pidNamespace[0], append(pidNamespace[1:], "true")...).CombinedOutput(); err != nil {
		t.Skipf("cannot make a PID namespace (%v: %s)", err, bytes.TrimSpace(out))
	}
}

// A producer in a PID namespace of its own: it cannot see this process (pid 0 to it), so the
// client holds by lease only, and the header names the creator by the pid it has there, 1,
// which the client finds as the last NSpid entry of the process answering.
func TestAProducerInItsOwnPIDNamespaceIsAttachedToByLeaseOnly(t *testing.T) {
	skipWithoutPIDNamespaces(t)
	service := startProducer(t, testSocketName(), append(pidNamespace, usersServiceBin(t)))
	client := connect(t, service.socket)
	if client.seg.header.creatorPID != 1 {
		t.Errorf("the segment's creator is pid %d, want 1", client.seg.header.creatorPID)
	}
	if client.seg.holderName != leaseOnly {
		t.Errorf("holding as %+v, want lease only", client.seg.holderName)
	}
	checkTiers(t, service, []tierCase{{"/users?count=20&seed=3", TierSlot}})
}

// A client in a child PID namespace (pid 1 there) holds slots under the pid the producer sees
// it by. Stamped with its own pid, the producer's reaper would look up this machine's pid 1.
func TestAClientInAChildPIDNamespaceHoldsUnderTheProducersPidForIt(t *testing.T) {
	skipWithoutPIDNamespaces(t)
	service := startUsersService(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	argv := append(pidNamespace, os.Args[0], "-test.run=^TestPeerChild$")
	child := exec.CommandContext(ctx, argv[0], argv[1:]...)
	child.Env = append(os.Environ(), childSocket+"="+service.socket)
	child.Stderr = os.Stderr
	out, err := child.Output()
	if err != nil {
		t.Fatalf("the child failed: %v\n%s", err, out)
	}
	lines := map[string]string{}
	scanner := bufio.NewScanner(bytes.NewReader(out))
	for scanner.Scan() {
		if key, value, found := strings.Cut(scanner.Text(), ": "); found {
			lines[key] = value
		}
	}
	// NSpid: the child's pid here, then in its own namespace.
	nspid := strings.Fields(lines["NSpid"])
	if len(nspid) != 2 || nspid[1] != "1" || lines["pid"] != "1" {
		t.Fatalf("the child is not pid 1 of a child PID namespace:\n%s", out)
	}
	if lines["attach"] != "ok" || lines["holder pid"] != nspid[0] {
		t.Fatalf("the child, pid %s here, holds as pid %q:\n%s", nspid[0], lines["holder pid"], out)
	}
	if want := fmt.Sprintf("slot %d", len(service.rest(t, "/users?count=20&seed=3"))); lines["redeemed"] != want {
		t.Errorf("the child's request:\n%s", out)
	}
}

// TestPeerChild is the child process of the test above; it passes at once in a normal run.
func TestPeerChild(t *testing.T) {
	socket := os.Getenv(childSocket)
	if socket == "" {
		return
	}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "NSpid:") {
			fmt.Printf("NSpid: %s\n", strings.TrimSpace(strings.TrimPrefix(line, "NSpid:")))
		}
	}
	fmt.Printf("pid: %d\n", os.Getpid())
	client, err := Connect(socket, Options{})
	if err != nil {
		fmt.Printf("attach: %v\n", err)
		return
	}
	defer client.Close()
	fmt.Printf("attach: ok\nholder pid: %d\n", client.seg.holderName.pid)
	response, err := client.Do(context.Background(), get("/users?count=20&seed=3"))
	if err != nil {
		fmt.Printf("redeemed: %v\n", err)
		return
	}
	defer response.Close()
	fmt.Printf("redeemed: %s %d\n", response.Tier, len(response.Body))
}
