package shmbridge

// Tests against the real Rust producer: users-service, started as its own process on an
// ephemeral port and a socket name of its own, its bodies compared byte for byte with what it
// answers over HTTP.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// usersService is a running users-service: its HTTP address and its control socket's name.
type usersService struct {
	cmd    *exec.Cmd
	addr   string
	socket string
}

// startUsersService starts the Rust producer with extra flags, on an abstract socket of its own.
func startUsersService(t *testing.T, flags ...string) *usersService {
	t.Helper()
	return startProducer(t, testSocketName(), append([]string{usersServiceBin(t)}, flags...))
}

// usersServiceBin is the Rust producer's binary: SHMBRIDGE_USERS_SERVICE_BIN (transport/go/ci.sh
// builds it), else the workspace's debug build.
func usersServiceBin(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("SHMBRIDGE_USERS_SERVICE_BIN")
	if bin == "" {
		bin, _ = filepath.Abs("../../target/debug/users-service")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("users-service is not built at %s: run `cargo build -p shmbridge-server --bin users-service` "+
			"or set SHMBRIDGE_USERS_SERVICE_BIN", bin)
	}
	return bin
}

// testSocketName is an abstract socket name no other test or run uses.
func testSocketName() string {
	return fmt.Sprintf("shmbridge-go-test-%d-%d", os.Getpid(), time.Now().UnixNano())
}

// startPythonUsersService starts the Python producer (server/python/users_service.py) with the
// interpreter SHMBRIDGE_PYTHON names, one with the shmbridge package installed (ci.sh makes
// one).
func startPythonUsersService(t *testing.T) *usersService {
	t.Helper()
	python := os.Getenv("SHMBRIDGE_PYTHON")
	if python == "" {
		t.Fatal("SHMBRIDGE_PYTHON must name a python with the shmbridge package: run transport/go/ci.sh")
	}
	script, _ := filepath.Abs("../../server/python/users_service.py")
	return startProducer(t, testSocketName(), []string{python, script})
}

// startProducer runs argv with an ephemeral port and the control socket socket, and waits
// (bounded) for its "listening on ADDR" line.
func startProducer(t *testing.T, socket string, argv []string) *usersService {
	t.Helper()
	args := append(argv[1:len(argv):len(argv)], "--listen", "127.0.0.1:0", "--shm-socket", socket)
	cmd := exec.Command(argv[0], args...)
	cmd.Env = append(os.Environ(), "RUST_LOG=warn")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	lines := make(chan string, 1)
	go func() {
		scanner := bufio.NewScanner(stdout)
		for scanner.Scan() {
			if line := scanner.Text(); strings.HasPrefix(line, "listening on ") {
				lines <- strings.TrimPrefix(line, "listening on ")
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	select {
	case addr := <-lines:
		return &usersService{cmd: cmd, addr: addr, socket: socket}
	case <-time.After(20 * time.Second):
		t.Fatalf("%s did not announce its address within 20 s", filepath.Base(argv[len(argv)-1]))
		return nil
	}
}

func (s *usersService) rest(t *testing.T, target string) []byte {
	t.Helper()
	response, err := http.Get("http://" + s.addr + target)
	if err != nil {
		t.Fatal(err)
	}
	defer response.Body.Close()
	body, err := io.ReadAll(response.Body)
	if err != nil || response.StatusCode != 200 {
		t.Fatalf("REST %s: status %d, %v", target, response.StatusCode, err)
	}
	return body
}

func connect(t *testing.T, socket string) *Client {
	t.Helper()
	client, err := Connect(socket, Options{})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { client.Close() })
	return client
}

func get(target string) []byte {
	return []byte("GET " + target + "\r\n\r\n")
}

// tierCase is a target and the tier its body must travel in.
type tierCase struct {
	target string
	tier   Tier
}

// checkTiers asks service for each case over the channel: a 200 with a content type, in the
// case's tier, with exactly the bytes the service answers over REST.
func checkTiers(t *testing.T, service *usersService, cases []tierCase) {
	t.Helper()
	client := connect(t, service.socket)
	for _, c := range cases {
		want := service.rest(t, c.target)
		response, err := client.Do(context.Background(), get(c.target))
		if err != nil {
			t.Fatalf("%s: %v", c.target, err)
		}
		if response.Status != 200 || response.Tier != c.tier || response.ContentType == "" {
			t.Errorf("%s: status %d tier %s content type %q, want 200 %s and one",
				c.target, response.Status, response.Tier, response.ContentType, c.tier)
		}
		if !bytes.Equal(response.Body, want) {
			t.Errorf("%s: %d bytes differ from REST's %d", c.target, len(response.Body), len(want))
		}
		if err := response.Close(); err != nil {
			t.Error(err)
		}
	}
}

func TestEveryTierCarriesTheProducersExactBytes(t *testing.T) {
	checkTiers(t, startUsersService(t, "--slot-size", "65536"), []tierCase{
		{"/blobs?size=0", TierInline},
		{"/blobs?size=100&pattern=text", TierInline},
		{"/blobs?size=4096", TierInline},
		{"/blobs?size=4097", TierSlot},
		{"/blobs?size=65536&pattern=zeros", TierSlot},
		{"/blobs?size=65537", TierSealed},
		{"/blobs?size=3000000&seed=9", TierSealed},
		{"/users?count=20&seed=3", TierSlot},
	})
}

func TestThePythonProducersBodiesInEveryTier(t *testing.T) {
	checkTiers(t, startPythonUsersService(t), []tierCase{
		{"/users?count=1&seed=5", TierInline},
		{"/users?count=708&seed=28", TierSlot},
		{"/users?count=10000&seed=2", TierSealed},
		{"/healthz", TierInline},
	})
}

func TestAHandleIsRedeemedOnceAndEverySlotComesBack(t *testing.T) {
	service := startUsersService(t, "--slot-count", "4", "--slot-size", "65536")
	client := connect(t, service.socket)
	// Four slots: forty slot and sealed redemptions in a row only succeed if each gave its
	// slot or ticket back.
	for i := 0; i < 40; i++ {
		size := 10000 + i*5000
		response, err := client.Do(context.Background(), get(fmt.Sprintf("/blobs?size=%d&seed=%d", size, i)))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if len(response.Body) != size {
			t.Fatalf("request %d: %d bytes", i, len(response.Body))
		}
		response.Close()
	}
}

func TestConcurrentRequestsGetTheirOwnAnswers(t *testing.T) {
	service := startUsersService(t)
	client := connect(t, service.socket)
	sizes := []int{10, 5000, 200000, 700000}
	want := map[int][]byte{}
	for _, size := range sizes {
		want[size] = service.rest(t, fmt.Sprintf("/blobs?size=%d", size))
	}
	errs := make(chan error, 64)
	for g := 0; g < 8; g++ {
		go func(g int) {
			for i := 0; i < 8; i++ {
				size := sizes[(g+i)%len(sizes)]
				response, err := client.Do(context.Background(), get(fmt.Sprintf("/blobs?size=%d", size)))
				if err == nil && !bytes.Equal(response.Body, want[size]) {
					err = fmt.Errorf("size %d: wrong bytes", size)
				}
				if response != nil {
					response.Close()
				}
				errs <- err
			}
		}(g)
	}
	for i := 0; i < 64; i++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

func TestRefusalsAreTyped(t *testing.T) {
	service := startUsersService(t, "--slot-size", "65536", "--max-payload", "100000")
	client := connect(t, service.socket)

	// 1,000 users are about 250 KB: above a slot, so sealed, and above --max-payload.
	_, err := client.Do(context.Background(), get("/users?count=1000"))
	var refused *RefusedError
	if !errors.As(err, &refused) || refused.Code != RefusedTooLarge || refused.Detail != 100000 {
		t.Errorf("above --max-payload: %v, want a TooLarge refusal naming 100000", err)
	}
	// A blob's size is checked before it is made: the service's own 413, an answer.
	response, err := client.Do(context.Background(), get("/blobs?size=200000"))
	if err != nil || response.Status != 413 {
		t.Errorf("a blob above the limit: %v", err)
	}

	_, err = client.Do(context.Background(), bytes.Repeat([]byte("x"), MaxRequestLen+1))
	if !errors.As(err, &refused) || refused.Code != RefusedRequestTooLarge {
		t.Errorf("a request above MaxRequestLen: %v", err)
	}

	// The channel survives both.
	response, err = client.Do(context.Background(), get("/blobs?size=10"))
	if err != nil || response.Status != 200 {
		t.Fatalf("after refusals: %v", err)
	}
	// A route that does not exist is an answer, not a refusal: the service's own 404.
	response, err = client.Do(context.Background(), get("/no-such-route"))
	if err != nil || response.Status != 404 {
		t.Errorf("unknown route: %v, %+v", err, response)
	}
}

func TestAPassedDeadlineIsATimeout(t *testing.T) {
	service := startUsersService(t)
	client := connect(t, service.socket)
	ctx, cancel := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	time.Sleep(time.Millisecond)
	if _, err := client.Do(ctx, get("/blobs?size=10")); !errors.Is(err, ErrTimeout) {
		t.Errorf("expired deadline: %v", err)
	}
	// A deadline too short for a large body: either answered in time or a timeout, never
	// wrong bytes; and the channel keeps working after it.
	ctx, cancel = context.WithTimeout(context.Background(), 200*time.Microsecond)
	defer cancel()
	if response, err := client.Do(ctx, get("/blobs?size=8000000")); err == nil {
		if len(response.Body) != 8000000 {
			t.Errorf("%d bytes", len(response.Body))
		}
		response.Close()
	} else if !errors.Is(err, ErrTimeout) {
		var refused *RefusedError
		if !errors.As(err, &refused) || refused.Code != RefusedDeadlineExceeded {
			t.Errorf("short deadline: %v", err)
		}
	}
	response, err := client.Do(context.Background(), get("/blobs?size=100000"))
	if err != nil || len(response.Body) != 100000 {
		t.Fatalf("after a timeout: %v", err)
	}
}

func TestAKilledProducerClosesTheChannelAndNoRequestHangs(t *testing.T) {
	t.Run("rust", func(t *testing.T) {
		killMidRequest(t, startUsersService(t), func(i int) string { return fmt.Sprintf("/blobs?size=%d", 1000000+i) })
	})
	t.Run("python", func(t *testing.T) {
		killMidRequest(t, startPythonUsersService(t), func(i int) string { return fmt.Sprintf("/users?count=%d", 3000+i) })
	})
}

// killMidRequest SIGKILLs service while 16 requests for target(i) are in flight: each ends in
// the exact body, ErrClosed, a timeout or a redeem error, never wrong bytes or a hang, and the
// client is closed afterwards.
func killMidRequest(t *testing.T, service *usersService, target func(int) string) {
	client := connect(t, service.socket)
	want := make([][]byte, 16)
	for i := range want {
		want[i] = service.rest(t, target(i))
	}
	done := make(chan error, 16)
	for i := 0; i < 16; i++ {
		go func(i int) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			response, err := client.Do(ctx, get(target(i)))
			if err == nil {
				if !bytes.Equal(response.Body, want[i]) {
					err = fmt.Errorf("%s: wrong bytes", target(i))
				}
				response.Close()
			}
			done <- err
		}(i)
	}
	time.Sleep(5 * time.Millisecond)
	service.cmd.Process.Signal(syscall.SIGKILL)
	for i := 0; i < 16; i++ {
		select {
		case err := <-done:
			var redeem *RedeemError
			if err != nil && !errors.Is(err, ErrClosed) && !errors.Is(err, ErrTimeout) && !errors.As(err, &redeem) {
				t.Errorf("request during the kill: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a request hung after its producer was killed")
		}
	}
	service.cmd.Wait()
	if _, err := client.Do(context.Background(), get(target(0))); !errors.Is(err, ErrClosed) {
		t.Errorf("after the kill: %v, want ErrClosed", err)
	}
}

// A socket name with a '/' is a file: the Rust producer listens there and the client connects
// there, as containers sharing a directory but no network namespace do.
func TestASocketNameWithASlashIsAFile(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "users.sock")
	service := startProducer(t, socket, []string{usersServiceBin(t)})
	if info, err := os.Stat(socket); err != nil || info.Mode()&os.ModeSocket == 0 {
		t.Fatalf("users-service made no socket file at %s: %v", socket, err)
	}
	checkTiers(t, service, []tierCase{{"/blobs?size=10", TierInline}, {"/users?count=20&seed=3", TierSlot}})
}

func TestReverseProxyOverTheTransport(t *testing.T) {
	service := startUsersService(t)
	transport := &Transport{SocketName: service.socket}
	defer transport.Close()
	client := &http.Client{Transport: transport, Timeout: 5 * time.Second}
	for _, target := range []string{"/blobs?size=300", "/blobs?size=300000", "/blobs?size=900000"} {
		response, err := client.Get("http://users" + target)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(response.Body)
		response.Body.Close()
		if err != nil || !bytes.Equal(body, service.rest(t, target)) {
			t.Errorf("%s: %v, %d bytes differ", target, err, len(body))
		}
		if !strings.HasPrefix(response.Header.Get(TransportHeader), "shm-") {
			t.Errorf("%s: %s = %q", target, TransportHeader, response.Header.Get(TransportHeader))
		}
		if got, want := response.Header.Get(CRCHeader), fmt.Sprintf("%08x", crc32.ChecksumIEEE(body)); got != want {
			t.Errorf("%s: %s = %q, the body's is %s", target, CRCHeader, got, want)
		}
	}
}
