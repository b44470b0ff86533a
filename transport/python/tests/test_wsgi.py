"""`shmbridge.wsgi`: an unchanged Flask application served over the control channel answers
every route as it answers over HTTP (Flask's own test client is the reference): status, content
type, headers and bytes, in every tier; a streamed body is written chunk by chunk; the app's
errors fail only their request. Flask is installed in the test environment only."""

import hashlib
import sys
import zlib

# Not importorskip: without Flask (ci.sh installs it) these tests must fail, not pass skipped.
import flask
import pytest

import shmbridge
import shmbridge.wsgi

SLOT_SIZE = 64 * 1024
CHUNK = 100_000


def make_app() -> "flask.Flask":
    """A small ordinary Flask app, written with no knowledge of shmbridge."""
    app = flask.Flask("wsgi_under_test")
    closed = app.config.setdefault("CLOSED", [])

    @app.get("/hello")
    def hello():
        return "hello, " + flask.request.args.get("name", "world")

    @app.get("/users/<int:count>")
    def users(count):
        return flask.jsonify([{"id": i, "name": f"user {i}"} for i in range(count)])

    @app.post("/echo")
    def echo():
        response = flask.make_response(flask.request.get_data())
        response.headers["X-Echo-Type"] = flask.request.content_type or ""
        response.headers["X-Echo-Agent"] = flask.request.headers.get("User-Agent", "")
        return response

    @app.get("/stream/<int:chunks>")
    def stream(chunks):
        def generate():
            try:
                for i in range(chunks):
                    yield hashlib.sha256(str(i).encode()).digest() * (CHUNK // 32)
            finally:
                closed.append(chunks)

        return flask.Response(generate(), mimetype="application/octet-stream")

    @app.get("/boom")
    def boom():
        raise RuntimeError("a bug in a route")

    return app


@pytest.fixture
def served():
    app = make_app()
    with shmbridge.Producer(slot_count=8, slot_size=SLOT_SIZE) as producer:
        socket = shmbridge.wsgi.serve(app, producer)
        with shmbridge.Consumer.connect(socket) as consumer:
            yield app, consumer


def ask(consumer, method, target, headers=(), body=b""):
    request = shmbridge.http_request_encode(method, target, list(headers), body)
    return consumer.request(request, timeout=10.0)


@pytest.mark.parametrize(
    "target, tier",
    [
        ("/hello", "inline"),
        ("/hello?name=shm", "inline"),
        ("/users/500", "slot"),
        ("/users/5000", "sealed"),
        ("/stream/3", "sealed"),
        ("/no/such/route", "inline"),
    ],
)
def test_every_route_answers_as_over_http(served, target, tier):
    app, consumer = served
    reference = app.test_client().get(target)
    response = ask(consumer, "GET", target)
    assert response.status == reference.status_code
    assert response.body == reference.get_data()
    assert response.content_type == reference.headers["Content-Type"]
    assert response.tier == tier


def test_a_request_body_and_headers_reach_the_app(served):
    app, consumer = served
    body = bytes(range(256)) * 50
    headers = [("Content-Type", "application/x-test"), ("User-Agent", "shm-test/1")]
    response = ask(consumer, "POST", "/echo", headers, body)
    assert response.status == 200
    assert response.body == body
    assert dict(response.headers)["X-Echo-Type"] == "application/x-test"
    assert dict(response.headers)["X-Echo-Agent"] == "shm-test/1"
    assert all(name.lower() != "content-length" for name, _ in response.headers)


def test_a_streamed_body_arrives_whole_and_its_iterable_is_closed(served):
    app, consumer = served
    response = ask(consumer, "GET", "/stream/40")
    expected = b"".join(
        hashlib.sha256(str(i).encode()).digest() * (CHUNK // 32) for i in range(40)
    )
    assert len(response.body) == len(expected) and zlib.crc32(response.body) == zlib.crc32(expected)
    assert response.tier == "sealed"
    assert 40 in app.config["CLOSED"]


def test_the_apps_iterable_is_closed_after_its_body_is_written():
    class Body:
        closed = 0

        def __iter__(self):
            yield b"first "
            yield bytearray(b"second")

        def close(self):
            Body.closed += 1

    def app(environ, start_response):
        start_response("201 Created", [("Content-Type", "text/plain"), ("X-A", "1")])
        return Body()

    with shmbridge.Producer(slot_count=4, slot_size=SLOT_SIZE) as producer:
        socket = shmbridge.wsgi.serve(app, producer)
        with shmbridge.Consumer.connect(socket) as consumer:
            response = ask(consumer, "GET", "/")
    assert (response.status, response.body, response.headers) == (201, b"first second", [("X-A", "1")])
    assert Body.closed == 1


def test_an_app_error_is_its_own_500_and_the_channel_keeps_serving(served):
    app, consumer = served
    # Flask turns an exception in a route into its own 500 page: an answer, not a refusal.
    response = ask(consumer, "GET", "/boom")
    assert response.status == 500
    assert ask(consumer, "GET", "/hello").body == b"hello, world"


def test_a_broken_app_fails_only_its_request(monkeypatch):
    def no_start_response(environ, start_response):
        return [b"never announced"]

    def bad_chunk(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ["text, not bytes"]

    reported = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)
    for app in (no_start_response, bad_chunk):
        with shmbridge.Producer(slot_count=4, slot_size=SLOT_SIZE) as producer:
            socket = shmbridge.wsgi.serve(app, producer)
            with shmbridge.Consumer.connect(socket) as consumer:
                # Twice: the first failure did not take the channel down.
                for _ in range(2):
                    with pytest.raises(shmbridge.HandlerFailed):
                        ask(consumer, "GET", "/")
    messages = [str(unraisable.exc_value) for unraisable in reported]
    assert messages == [
        "the WSGI application returned without calling start_response",
    ] * 2 + ["a WSGI application's body chunks are bytes, not str"] * 2



def test_the_environ_follows_pep_3333():
    request = shmbridge.http_request_encode(
        "PUT",
        "/a%20b/c?x=1&y=2",
        [("Content-Type", "text/plain"), ("X-Many", "1"), ("X-Many", "2")],
        b"body",
    )
    environ = shmbridge.wsgi.environ_for(request, "example", "8080")
    assert environ["REQUEST_METHOD"] == "PUT"
    assert environ["PATH_INFO"] == "/a b/c"
    assert environ["QUERY_STRING"] == "x=1&y=2"
    assert environ["CONTENT_TYPE"] == "text/plain"
    assert environ["CONTENT_LENGTH"] == "4"
    assert environ["HTTP_X_MANY"] == "1,2"
    assert environ["SERVER_NAME"] == "example" and environ["SERVER_PORT"] == "8080"
    assert environ["wsgi.input"].read() == b"body"
