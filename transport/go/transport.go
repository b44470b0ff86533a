package shmbridge

// An http.RoundTripper over the control channel, in the HTTP request convention of
// transport/src/http.rs: the request head without the version, then the body. The response
// needs no convention: the answer's head carries the status, the content type and the headers.

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// TransportHeader names the tier that carried a body ("shm-inline", "shm-slot",
// "shm-sealed"), as the Rust gateway names it.
const TransportHeader = "X-Transport"

// CRCHeader carries the body's verified crc32 as 8 lowercase hex digits, unless the producer's
// head already has one, as the Rust gateway writes it, so that a client can check the bytes end
// to end.
const CRCHeader = "X-Payload-Crc32"

// hopByHop are the headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
var hopByHop = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Proxy-Connection": true, "Te": true, "Trailer": true,
	"Transfer-Encoding": true, "Upgrade": true,
}

// Transport is an http.RoundTripper that asks the producer on SocketName (a name or a path, as
// Connect reads it) over shared memory. It connects on first use and again after the channel is
// gone (the producer restarted). A request that does not fit the channel (above MaxRequestLen, or
// a header the encoding cannot carry) fails with an error and reaches no producer.
type Transport struct {
	SocketName string
	Options    Options

	mu     sync.Mutex
	client *Client
}

// Close closes the current channel, if any.
func (t *Transport) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.client == nil {
		return nil
	}
	err := t.client.Close()
	t.client = nil
	return err
}

func (t *Transport) connected() (*Client, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.client != nil && t.client.Err() != nil {
		// Bodies already returned keep their own memory; the old mapping goes with it.
		go t.client.Close()
		t.client = nil
	}
	if t.client == nil {
		client, err := Connect(t.SocketName, t.Options)
		if err != nil {
			return nil, err
		}
		t.client = client
	}
	return t.client, nil
}

// Ready connects if no channel is up, and says why it cannot.
func (t *Transport) Ready() error {
	_, err := t.connected()
	return err
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	request, err := EncodeHTTPRequest(req)
	if err != nil {
		return nil, err
	}
	client, err := t.connected()
	if err != nil {
		return nil, err
	}
	response, err := client.Do(req.Context(), request)
	if err != nil {
		return nil, err
	}
	header := make(http.Header, len(response.Headers)+3)
	for _, pair := range response.Headers {
		header.Add(pair[0], pair[1])
	}
	if response.ContentType != "" {
		header.Set("Content-Type", response.ContentType)
	}
	header.Set("Content-Length", strconv.Itoa(len(response.Body)))
	header.Set(TransportHeader, "shm-"+response.Tier.String())
	if header.Get(CRCHeader) == "" {
		header.Set(CRCHeader, fmt.Sprintf("%08x", response.CRC32))
	}
	return &http.Response{
		Status:        fmt.Sprintf("%d %s", response.Status, http.StatusText(response.Status)),
		StatusCode:    response.Status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        header,
		Body:          &responseBody{Reader: bytes.NewReader(response.Body), response: response},
		ContentLength: int64(len(response.Body)),
		Request:       req,
	}, nil
}

type responseBody struct {
	*bytes.Reader
	response *Response
}

func (b *responseBody) Close() error { return b.response.Close() }

// EncodeHTTPRequest writes req in the channel's HTTP request encoding: its method, its
// origin-form target, its end-to-end headers (the Host among them) and its whole body, at most
// MaxRequestLen bytes in all.
func EncodeHTTPRequest(req *http.Request) ([]byte, error) {
	var out bytes.Buffer
	target := req.URL.RequestURI()
	if !isToken([]byte(req.Method)) || !strings.HasPrefix(target, "/") {
		return nil, fmt.Errorf("shmbridge: request line %q %q cannot be forwarded", req.Method, target)
	}
	fmt.Fprintf(&out, "%s %s\r\n", req.Method, target)
	headers := 0
	writeHeader := func(name, value string) error {
		value = strings.Trim(value, " \t")
		if !isToken([]byte(name)) || !isFieldValue([]byte(value)) {
			return fmt.Errorf("shmbridge: request header %s cannot be forwarded (not visible ASCII)", name)
		}
		if headers++; headers > maxHeaders {
			return fmt.Errorf("shmbridge: more than %d request headers", maxHeaders)
		}
		fmt.Fprintf(&out, "%s: %s\r\n", name, value)
		return nil
	}
	if req.Host != "" {
		if err := writeHeader("Host", req.Host); err != nil {
			return nil, err
		}
	}
	for name, values := range req.Header {
		if hopByHop[http.CanonicalHeaderKey(name)] || strings.EqualFold(name, "Host") {
			continue
		}
		for _, value := range values {
			if err := writeHeader(name, value); err != nil {
				return nil, err
			}
		}
	}
	out.WriteString("\r\n")
	if req.Body != nil && req.Body != http.NoBody {
		defer req.Body.Close()
		room := int64(MaxRequestLen - out.Len())
		if _, err := io.CopyN(&out, req.Body, room+1); err != nil && err != io.EOF {
			return nil, fmt.Errorf("shmbridge: reading the request body: %w", err)
		}
	}
	if out.Len() > MaxRequestLen {
		return nil, &RefusedError{Code: RefusedRequestTooLarge, Detail: MaxRequestLen}
	}
	return out.Bytes(), nil
}
