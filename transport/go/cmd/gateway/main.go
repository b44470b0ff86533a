// Command gateway is the seed's Go gateway rebuilt on the shmbridge Go package: the same routes
// (/api/users-via-api over HTTP, /api/users-via-shm over shared memory, /healthz, /readyz), and
// any users-service path under /via-api/ or /via-shm/ as the Rust gateway serves them, all by
// httputil.ReverseProxy, with Go's HTTP transport or with shmbridge's. It
// takes the flags the load tool gives the Rust gateway (--listen, --upstream, --deadline) and
// prints the same "listening on ADDR" line, so `compare --gateway go` measures it like ours.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"shmbridge"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to listen on; port 0 picks a free one")
	upstream := flag.String("upstream", "http://127.0.0.1:8081", "users-service's base URL")
	deadline := flag.String("deadline", "2s", "how long a request may take end to end")
	socket := flag.String("shm-socket", "", "users-service's control socket: an abstract name, or a path when it holds a '/' (default: asked of GET /shm/segment)")
	flag.Parse()
	// The load tool writes durations as humantime does ("1m 30s"); Go wants "1m30s".
	timeout, err := time.ParseDuration(strings.ReplaceAll(*deadline, " ", ""))
	if err != nil || timeout <= 0 {
		log.Fatalf("--deadline %q: not a positive duration", *deadline)
	}
	base, err := url.Parse(*upstream)
	if err != nil || base.Host == "" {
		log.Fatalf("--upstream %q: not a base URL", *upstream)
	}
	shm := &shmTransport{upstream: base, socket: *socket}
	rest := &http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second}

	mux := http.NewServeMux()
	mux.Handle("/api/users-via-api", proxy(base, rest, "api", timeout, usersRoute))
	mux.Handle("/api/users-via-shm", proxy(base, shm, "", timeout, usersRoute))
	mux.Handle("/via-api/", proxy(base, rest, "api", timeout, strip("/via-api")))
	mux.Handle("/via-shm/", proxy(base, shm, "", timeout, strip("/via-shm")))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := shm.ready(); err != nil {
			writeError(w, http.StatusServiceUnavailable, "not_ready", err)
			return
		}
		fmt.Fprintln(w, "ready")
	})

	listener, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("listen on %s: %v", *listen, err)
	}
	fmt.Printf("listening on %s\n", listener.Addr())
	server := &http.Server{
		Handler:           http.TimeoutHandler(mux, timeout+time.Second, "gateway deadline passed"),
		ReadHeaderTimeout: 10 * time.Second,
		WriteTimeout:      timeout + 30*time.Second,
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
	go func() {
		<-stop
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		server.Shutdown(ctx)
	}()
	if err := server.Serve(listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
	shm.close()
}

// usersRoute: the seed's routes are users-service's /users, with the client's query.
func usersRoute(string) string { return "/users" }

// strip: a prefixed route is users-service's path after the prefix.
func strip(prefix string) func(string) string {
	return func(path string) string { return strings.TrimPrefix(path, prefix) }
}

// proxy forwards a request to users-service's path route(path), with the client's query, over
// transport; transportName, when set, is the x-transport the response gets (the shm transport
// names its tier itself). timeout bounds each request end to end.
func proxy(base *url.URL, transport http.RoundTripper, transportName string, timeout time.Duration, route func(string) string) http.Handler {
	reverse := &httputil.ReverseProxy{
		Director: func(r *http.Request) {
			r.URL.Scheme, r.URL.Host, r.URL.Path, r.URL.RawPath = base.Scheme, base.Host, route(r.URL.Path), ""
			r.Host = base.Host
		},
		Transport: transport,
		ModifyResponse: func(r *http.Response) error {
			if transportName != "" {
				r.Header.Set(shmbridge.TransportHeader, transportName)
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			status, code := classify(err)
			if status == http.StatusServiceUnavailable {
				w.Header().Set("Retry-After", "1")
			}
			writeError(w, status, code, err)
		},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		reverse.ServeHTTP(w, r.WithContext(ctx))
	})
}

// classify maps a failed fetch to the status and stable code a client sees: never a 200.
func classify(err error) (int, string) {
	var refused *shmbridge.RefusedError
	var attach *shmbridge.AttachError
	switch {
	case errors.Is(err, shmbridge.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, "deadline_exceeded"
	case errors.As(err, &refused) && refused.Code == shmbridge.RefusedTooLarge:
		return http.StatusRequestEntityTooLarge, "payload_too_large"
	case errors.As(err, &refused):
		return http.StatusServiceUnavailable, "shm_busy"
	case errors.As(err, &attach), errors.Is(err, shmbridge.ErrClosed):
		return http.StatusServiceUnavailable, "shm_unavailable"
	}
	var redeem *shmbridge.RedeemError
	if errors.As(err, &redeem) {
		return http.StatusBadGateway, "shm_redeem_failed"
	}
	return http.StatusBadGateway, "upstream_failed"
}

func writeError(w http.ResponseWriter, status int, code string, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"code": code, "error": err.Error()})
}

// shmTransport is shmbridge's RoundTripper for users-service's control socket, found through
// GET /shm/segment and found again when attaching fails (users-service restarted under a new
// socket name). Only attaching is retried: nothing was sent to the producer then.
type shmTransport struct {
	upstream *url.URL
	socket   string

	mu        sync.Mutex
	transport *shmbridge.Transport
}

func (s *shmTransport) current(rediscover bool) (*shmbridge.Transport, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.transport != nil && !rediscover {
		return s.transport, nil
	}
	name := s.socket
	if name == "" {
		var err error
		if name, err = s.discover(); err != nil {
			return nil, err
		}
	}
	if s.transport != nil {
		go s.transport.Close()
	}
	s.transport = &shmbridge.Transport{SocketName: name}
	return s.transport, nil
}

func (s *shmTransport) discover() (string, error) {
	client := http.Client{Timeout: 2 * time.Second}
	response, err := client.Get(s.upstream.JoinPath("/shm/segment").String())
	if err != nil {
		return "", &shmbridge.AttachError{Reason: "ask users-service for its control socket", Err: err}
	}
	defer response.Body.Close()
	var segment struct {
		Socket string `json:"socket"`
	}
	if err := json.NewDecoder(response.Body).Decode(&segment); err != nil || segment.Socket == "" {
		return "", &shmbridge.AttachError{Reason: fmt.Sprintf("GET /shm/segment answered %s without a socket", response.Status)}
	}
	return segment.Socket, nil
}

func (s *shmTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	transport, err := s.current(false)
	if err != nil {
		return nil, err
	}
	response, err := transport.RoundTrip(r)
	var attach *shmbridge.AttachError
	if errors.As(err, &attach) && r.Body == nil {
		if transport, err = s.current(true); err != nil {
			return nil, err
		}
		return transport.RoundTrip(r)
	}
	return response, err
}

func (s *shmTransport) ready() error {
	transport, err := s.current(false)
	if err == nil {
		err = transport.Ready()
	}
	if err != nil {
		if transport, err = s.current(true); err == nil {
			err = transport.Ready()
		}
	}
	return err
}

func (s *shmTransport) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.transport != nil {
		s.transport.Close()
	}
}
