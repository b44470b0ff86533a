package shmbridge_test

// The README's Go example, run against users-service; TestTheReadmeShowsTheExample keeps the
// README's copy equal to the code between the markers below.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"shmbridge"
)

// README begin
// fetch asks the service behind socket for target: once on the control channel itself, once
// through net/http, which takes shmbridge.Transport like any http.RoundTripper.
func fetch(socket, target string) error {
	client, err := shmbridge.Connect(socket, shmbridge.Options{})
	if err != nil {
		return err
	}
	defer client.Close()
	response, err := client.Do(context.Background(), []byte("GET "+target+"\r\n\r\n"))
	if err != nil {
		return err // typed: *RefusedError, *RedeemError, *AttachError, ErrTimeout, ErrClosed
	}
	defer response.Close()
	fmt.Println(response.Status, len(response.Body), response.Tier) // 200 256873 slot

	web := &http.Client{Transport: &shmbridge.Transport{SocketName: socket}}
	reply, err := web.Get("http://users-service" + target)
	if err != nil {
		return err
	}
	defer reply.Body.Close()
	body, err := io.ReadAll(reply.Body)
	fmt.Println(reply.StatusCode, len(body), reply.Header.Get("X-Transport")) // 200 256873 shm-slot
	return err
}

// README end

func TestTheReadmeExampleFetchesFromUsersService(t *testing.T) {
	service := shmbridge.StartUsersService(t)
	if err := fetch(service.Socket(), "/users?count=708&seed=28"); err != nil {
		t.Fatal(err)
	}
}

func TestTheReadmeShowsTheExample(t *testing.T) {
	source, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(source)
	begin, end := strings.Index(text, "// README begin\n"), strings.Index(text, "// README end")
	example := strings.TrimSpace(text[begin+len("// README begin\n") : end])
	if !strings.Contains(string(readme), example) {
		t.Errorf("README.md does not show the example as example_test.go has it:\n%s", example)
	}
}
