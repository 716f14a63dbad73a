//! Tests of the HTTP parser and writer: any split of the input, pipelining, keep-alive rules,
//! every error status, and each limit exactly at and one past its bound.

use super::*;

/// Feeds `input` in one piece and drains every request; stops at the first error.
fn parse_all(input: &[u8]) -> (Vec<Request>, Option<HttpError>) {
    let mut parser = RequestParser::new();
    let mut requests = Vec::new();
    if let Err(error) = parser.feed(input) {
        return (requests, Some(error));
    }
    loop {
        match parser.next_request() {
            Ok(Some(request)) => requests.push(request),
            Ok(None) => return (requests, None),
            Err(error) => return (requests, Some(error)),
        }
    }
}

/// Feeds `input` in pieces of `piece_bytes`, draining after each piece.
fn parse_in_pieces(input: &[u8], piece_bytes: usize) -> (Vec<Request>, Option<HttpError>) {
    let mut parser = RequestParser::new();
    let mut requests = Vec::new();
    for piece in input.chunks(piece_bytes) {
        if let Err(error) = parser.feed(piece) {
            return (requests, Some(error));
        }
        loop {
            match parser.next_request() {
                Ok(Some(request)) => requests.push(request),
                Ok(None) => break,
                Err(error) => return (requests, Some(error)),
            }
        }
    }
    (requests, None)
}

fn parse_one(input: &str) -> Request {
    let (requests, error) = parse_all(input.as_bytes());
    assert_eq!(error, None, "input {input:?}");
    assert_eq!(requests.len(), 1, "input {input:?}");
    requests.into_iter().next().unwrap()
}

fn parse_error(input: &[u8]) -> HttpError {
    let (requests, error) = parse_all(input);
    assert!(requests.is_empty(), "input {:?} gave {requests:?}", String::from_utf8_lossy(input));
    error.unwrap_or_else(|| panic!("input {:?} parsed without error", String::from_utf8_lossy(input)))
}

fn get(path: &str) -> Request {
    Request {
        method: Method::Get,
        version: Version::Http11,
        path: path.to_string(),
        query: None,
        host: Some("h".to_string()),
        keep_alive: true,
    }
}

/// A complete head of exactly `total_bytes` bytes: a short request line and one header whose
/// value is padding.
fn head_of_length(total_bytes: usize) -> Vec<u8> {
    let fixed = "GET / HTTP/1.1\r\nX: \r\n\r\n".len();
    let padding = "a".repeat(total_bytes - fixed);
    let head = format!("GET / HTTP/1.1\r\nX: {padding}\r\n\r\n");
    assert_eq!(head.len(), total_bytes);
    head.into_bytes()
}

/// A request line of exactly `line_bytes` bytes (without CRLF), then the end of the head.
fn request_line_of_length(line_bytes: usize) -> Vec<u8> {
    let fixed = "GET / HTTP/1.1".len();
    let path = format!("/{}", "p".repeat(line_bytes - fixed));
    let line = format!("GET {path} HTTP/1.1");
    assert_eq!(line.len(), line_bytes);
    format!("{line}\r\n\r\n").into_bytes()
}

fn with_header_count(count: usize) -> Vec<u8> {
    let mut head = String::from("GET / HTTP/1.1\r\n");
    for i in 0..count {
        head.push_str(&format!("X-{i}: v\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

#[test]
fn parses_a_simple_get() {
    let request = parse_one("GET /metrics HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n");
    assert_eq!(request, get("/metrics"));
}

#[test]
fn splits_path_and_query_at_the_first_question_mark() {
    let request = parse_one("GET /metrics?x=y&z=?w HTTP/1.1\r\n\r\n");
    assert_eq!(request.path, "/metrics");
    assert_eq!(request.query.as_deref(), Some("x=y&z=?w"));
    let request = parse_one("GET /status? HTTP/1.1\r\n\r\n");
    assert_eq!(request.path, "/status");
    assert_eq!(request.query.as_deref(), Some(""));
    assert_eq!(parse_one("GET / HTTP/1.1\r\n\r\n").query, None);
}

#[test]
fn any_split_of_the_input_gives_the_same_requests() {
    let input =
        b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nHEAD /b?q HTTP/1.1\r\nHost: h\r\n\r\nGET /c HTTP/1.1\r\nHost: h\r\n\r\n";
    let (expected, error) = parse_all(input);
    assert_eq!(error, None);
    assert_eq!(expected.len(), 3);
    assert_eq!(expected[1].method, Method::Head);
    assert_eq!(expected[1].query.as_deref(), Some("q"));
    for piece_bytes in 1..=input.len() {
        assert_eq!(parse_in_pieces(input, piece_bytes), (expected.clone(), None), "pieces of {piece_bytes}");
    }
}

#[test]
fn byte_at_a_time_yields_nothing_until_the_head_ends() {
    let input = b"GET /health HTTP/1.1\r\nHost: h\r\n\r\n";
    let mut parser = RequestParser::new();
    for (i, byte) in input.iter().enumerate() {
        parser.feed(std::slice::from_ref(byte)).unwrap();
        let request = parser.next_request().unwrap();
        assert_eq!(request.is_some(), i == input.len() - 1, "after byte {i}");
    }
    assert_eq!(parser.buffered_bytes(), 0);
}

#[test]
fn pipelined_requests_in_one_read_come_out_in_order() {
    let mut input = Vec::new();
    for i in 0..10 {
        input.extend_from_slice(format!("GET /{i} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
    }
    let (requests, error) = parse_all(&input);
    assert_eq!(error, None);
    let paths: Vec<String> = requests.iter().map(|r| r.path.clone()).collect();
    let expected: Vec<String> = (0..10).map(|i| format!("/{i}")).collect();
    assert_eq!(paths, expected);
}

#[test]
fn a_partial_pipelined_request_waits_for_its_end() {
    let mut parser = RequestParser::new();
    parser.feed(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nHo").unwrap();
    assert_eq!(parser.next_request().unwrap().unwrap().path, "/a");
    assert_eq!(parser.next_request().unwrap(), None);
    parser.feed(b"st: h\r\n\r\n").unwrap();
    assert_eq!(parser.next_request().unwrap().unwrap().path, "/b");
    assert_eq!(parser.next_request().unwrap(), None);
}

#[test]
fn http11_keeps_alive_unless_connection_close() {
    assert!(parse_one("GET / HTTP/1.1\r\n\r\n").keep_alive);
    assert!(parse_one("GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n").keep_alive);
    assert!(!parse_one("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
    assert!(!parse_one("GET / HTTP/1.1\r\nconnection: Upgrade, CLOSE\r\n\r\n").keep_alive);
    assert!(!parse_one("GET / HTTP/1.1\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n").keep_alive);
}

#[test]
fn http10_closes_unless_connection_keep_alive() {
    let request = parse_one("GET / HTTP/1.0\r\n\r\n");
    assert_eq!(request.version, Version::Http10);
    assert!(!request.keep_alive);
    assert!(parse_one("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
    assert!(!parse_one("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n").keep_alive);
}

#[test]
fn nothing_comes_out_after_a_request_that_closes() {
    let mut parser = RequestParser::new();
    parser.feed(b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\n\r\n").unwrap();
    assert!(!parser.next_request().unwrap().unwrap().keep_alive);
    assert!(parser.is_closed());
    assert_eq!(parser.next_request().unwrap(), None);
    parser.feed(b"GET /c HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(parser.next_request().unwrap(), None);
    assert_eq!(parser.buffered_bytes(), 0);
}

#[test]
fn head_requests_parse_as_head() {
    assert_eq!(parse_one("HEAD /metrics HTTP/1.1\r\n\r\n").method, Method::Head);
}

#[test]
fn missing_host_is_tolerated_and_host_is_reported() {
    assert_eq!(parse_one("GET / HTTP/1.1\r\n\r\n").host, None);
    assert_eq!(parse_one("GET / HTTP/1.1\r\nHOST:   node-1:9100 \r\n\r\n").host.as_deref(), Some("node-1:9100"));
}

#[test]
fn bare_lf_line_endings_and_leading_empty_lines_are_accepted() {
    assert_eq!(parse_one("GET /a HTTP/1.1\nHost: h\n\n").path, "/a");
    assert_eq!(parse_one("\r\n\nGET /b HTTP/1.1\r\n\r\n").path, "/b");
}

#[test]
fn content_length_zero_is_accepted() {
    assert_eq!(parse_one("GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").path, "/");
    assert_eq!(parse_one("GET / HTTP/1.1\r\nContent-Length: 000\r\n\r\n").path, "/");
}

#[test]
fn malformed_request_lines_are_400() {
    for input in [
        "GET\r\n\r\n",
        "GET /\r\n\r\n",
        "GET  / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1 \r\n\r\n",
        " GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1 extra\r\n\r\n",
        "G(T / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1\r\n\r\n",
        "GET / HTTX/1.1\r\n\r\n",
        "GET / http/1.1\r\n\r\n",
        "GET / HTTP/1.1\rX\r\n\r\n",
        "GET / HTTP/1.10\r\n\r\n",
    ] {
        let error = parse_error(input.as_bytes());
        assert_eq!(error, HttpError::MalformedRequestLine, "input {input:?}");
        assert_eq!(error.status(), Status::BadRequest);
    }
}

#[test]
fn invalid_targets_are_400() {
    let inputs: [&[u8]; 6] = [
        b"GET metrics HTTP/1.1\r\n\r\n",
        b"GET http://h/metrics HTTP/1.1\r\n\r\n",
        b"GET * HTTP/1.1\r\n\r\n",
        b"GET /a\x01b HTTP/1.1\r\n\r\n",
        b"GET /a\x7fb HTTP/1.1\r\n\r\n",
        b"GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n",
    ];
    for input in inputs {
        let error = parse_error(input);
        assert_eq!(error, HttpError::InvalidTarget, "input {:?}", String::from_utf8_lossy(input));
        assert_eq!(error.status(), Status::BadRequest);
    }
}

#[test]
fn malformed_headers_are_400() {
    let inputs: [&[u8]; 8] = [
        b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : h\r\n\r\n",
        b"GET / HTTP/1.1\r\n: v\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\x1bb\r\n\r\n",
        b"GET / HTTP/1.1\r\nX(y): v\r\n\r\n",
    ];
    for input in inputs {
        let error = parse_error(input);
        assert_eq!(error, HttpError::MalformedHeader, "input {:?}", String::from_utf8_lossy(input));
        assert_eq!(error.status(), Status::BadRequest);
    }
    // obs-text (bytes >= 0x80) and tabs are allowed in values.
    let (requests, error) = parse_all(b"GET / HTTP/1.1\r\nX: caf\xc3\xa9\tok\r\n\r\n");
    assert_eq!((requests.len(), error), (1, None));
}

#[test]
fn unsupported_versions_are_505() {
    for input in ["GET / HTTP/2.0\r\n\r\n", "GET / HTTP/0.9\r\n\r\n", "GET / HTTP/1.2\r\n\r\n"] {
        let error = parse_error(input.as_bytes());
        assert_eq!(error, HttpError::UnsupportedVersion, "input {input:?}");
        assert_eq!(error.status().code(), 505);
    }
}

#[test]
fn other_methods_are_405_with_allow() {
    for input in ["POST / HTTP/1.1\r\n\r\n", "get / HTTP/1.1\r\n\r\n", "OPTIONS / HTTP/1.1\r\n\r\n"] {
        let error = parse_error(input.as_bytes());
        assert_eq!(error, HttpError::MethodNotAllowed, "input {input:?}");
        assert_eq!(error.status().code(), 405);
    }
    let response = HttpError::MethodNotAllowed.response();
    let text = std::str::from_utf8(&response).unwrap();
    assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{text}");
    assert!(text.contains("\r\nAllow: GET, HEAD\r\n"), "{text}");
    assert!(text.contains("\r\nConnection: close\r\n"), "{text}");
}

#[test]
fn announced_bodies_are_413() {
    for input in [
        "GET / HTTP/1.1\r\nContent-Length: 1\r\n\r\n",
        "GET / HTTP/1.1\r\nContent-Length: 99999999999999999999999999\r\n\r\n",
        "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET / HTTP/1.1\r\ntransfer-encoding: identity\r\n\r\n",
    ] {
        let error = parse_error(input.as_bytes());
        assert_eq!(error, HttpError::BodyNotAllowed, "input {input:?}");
        assert_eq!(error.status().code(), 413);
    }
}

#[test]
fn invalid_content_length_and_duplicate_host_are_400() {
    for input in [
        "GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        "GET / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n",
        "GET / HTTP/1.1\r\nContent-Length:\r\n\r\n",
        "GET / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
    ] {
        assert_eq!(parse_error(input.as_bytes()), HttpError::InvalidContentLength, "input {input:?}");
    }
    let error = parse_error(b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n");
    assert_eq!(error, HttpError::DuplicateHost);
    assert_eq!(error.status().code(), 400);
}

#[test]
fn head_of_exactly_the_maximum_is_accepted_and_one_more_byte_is_431() {
    let at_bound = head_of_length(REQUEST_HEAD_BYTES_MAX);
    for piece_bytes in [1, 7, at_bound.len()] {
        let (requests, error) = parse_in_pieces(&at_bound, piece_bytes);
        assert_eq!((requests.len(), error), (1, None), "pieces of {piece_bytes}");
    }
    let past_bound = head_of_length(REQUEST_HEAD_BYTES_MAX + 1);
    for piece_bytes in [1, 7, past_bound.len()] {
        let (requests, error) = parse_in_pieces(&past_bound, piece_bytes);
        assert_eq!((requests.len(), error), (0, Some(HttpError::HeadTooLarge)), "pieces of {piece_bytes}");
    }
    assert_eq!(HttpError::HeadTooLarge.status().code(), 431);
}

#[test]
fn an_oversized_head_is_refused_before_it_ends() {
    let mut parser = RequestParser::new();
    parser.feed(b"GET / HTTP/1.1\r\nX: ").unwrap();
    let padding = vec![b'a'; REQUEST_HEAD_BYTES_MAX];
    assert_eq!(parser.feed(&padding), Err(HttpError::HeadTooLarge));
    assert_eq!(parser.buffered_bytes(), 0);
    // Byte at a time: the error comes with the byte that leaves no room for the final LF.
    let mut parser = RequestParser::new();
    let head = head_of_length(REQUEST_HEAD_BYTES_MAX + 1);
    let through_padding = &head[..head.len() - 4];
    for byte in through_padding {
        parser.feed(std::slice::from_ref(byte)).unwrap();
    }
    assert_eq!(parser.feed(b"\r"), Ok(()));
    assert_eq!(parser.feed(b"\n"), Ok(()));
    assert_eq!(parser.buffered_bytes(), REQUEST_HEAD_BYTES_MAX - 1);
    assert_eq!(parser.feed(b"\r"), Err(HttpError::HeadTooLarge), "the final LF would be one byte past the bound");
}

#[test]
fn request_line_of_exactly_the_maximum_is_accepted_and_one_more_byte_is_414() {
    let at_bound = request_line_of_length(REQUEST_LINE_BYTES_MAX);
    for piece_bytes in [1, at_bound.len()] {
        let (requests, error) = parse_in_pieces(&at_bound, piece_bytes);
        assert_eq!((requests.len(), error), (1, None), "pieces of {piece_bytes}");
    }
    let past_bound = request_line_of_length(REQUEST_LINE_BYTES_MAX + 1);
    for piece_bytes in [1, past_bound.len()] {
        let (requests, error) = parse_in_pieces(&past_bound, piece_bytes);
        assert_eq!((requests.len(), error), (0, Some(HttpError::RequestLineTooLong)), "pieces of {piece_bytes}");
    }
    // Refused before the line ends: no LF ever arrives here.
    let mut parser = RequestParser::new();
    let long_line = vec![b'G'; REQUEST_LINE_BYTES_MAX + 2];
    assert_eq!(parser.feed(&long_line), Err(HttpError::RequestLineTooLong));
    assert_eq!(HttpError::RequestLineTooLong.status().code(), 414);
}

#[test]
fn header_count_at_the_maximum_is_accepted_and_one_more_is_431() {
    let (requests, error) = parse_all(&with_header_count(HEADER_COUNT_MAX));
    assert_eq!((requests.len(), error), (1, None));
    let error = parse_error(&with_header_count(HEADER_COUNT_MAX + 1));
    assert_eq!(error, HttpError::TooManyHeaders);
    assert_eq!(error.status().code(), 431);
}

#[test]
fn an_error_poisons_the_parser_after_the_good_requests_before_it() {
    let mut parser = RequestParser::new();
    parser.feed(b"GET /ok HTTP/1.1\r\n\r\nPOST /bad HTTP/1.1\r\n\r\nGET /later HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(parser.next_request().unwrap().unwrap().path, "/ok");
    assert_eq!(parser.next_request(), Err(HttpError::MethodNotAllowed));
    assert_eq!(parser.next_request(), Err(HttpError::MethodNotAllowed));
    assert_eq!(parser.feed(b"GET / HTTP/1.1\r\n\r\n"), Err(HttpError::MethodNotAllowed));
    assert_eq!(parser.buffered_bytes(), 0);
}

#[test]
fn random_input_never_panics() {
    // A fixed xorshift stream: bytes biased towards the ones that matter to the grammar.
    let alphabet = b"GET /HTP1.0\r\n: ,?a\x00\x7f\xff\t";
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..2_000 {
        let mut parser = RequestParser::new();
        for _ in 0..64 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 16) as usize;
            let piece: Vec<u8> = (0..len).map(|i| alphabet[((state >> (i * 4)) as usize) % alphabet.len()]).collect();
            if parser.feed(&piece).is_err() {
                break;
            }
            while let Ok(Some(_)) = parser.next_request() {}
        }
    }
}

#[test]
fn response_has_status_line_headers_and_body() {
    let response = Response::new(Status::Ok, CONTENT_TYPE_TEXT, b"ok\n").with_keep_alive(true).to_bytes(Method::Get);
    assert_eq!(
        &response[..],
        &b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n"[..]
    );
    let response = Response::new(Status::ServiceUnavailable, CONTENT_TYPE_TEXT, b"").to_bytes(Method::Get);
    assert_eq!(
        &response[..],
        &b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"[..]
    );
}

#[test]
fn head_response_has_the_get_headers_and_no_body() {
    let response = Response::new(Status::Ok, CONTENT_TYPE_JSON, b"{}");
    let get = response.to_bytes(Method::Get);
    let head = response.to_bytes(Method::Head);
    assert_eq!(&get[..head.len()], &head[..]);
    assert_eq!(&get[head.len()..], b"{}");
    assert!(std::str::from_utf8(&head).unwrap().contains("Content-Length: 2\r\n"));
    assert!(head.ends_with(b"\r\n\r\n"));
}

#[test]
fn answer_follows_method_and_keep_alive() {
    let mut request = get("/");
    request.method = Method::Head;
    request.keep_alive = false;
    let response = Response::answer(&request, Status::NotFound, CONTENT_TYPE_TEXT, b"not found\n");
    let text = std::str::from_utf8(&response).unwrap();
    assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"));
    assert!(text.contains("Connection: close\r\n"));
    assert!(text.ends_with("\r\n\r\n"));
}

#[test]
fn extra_headers_are_written_unless_invalid_or_managed() {
    let headers = [
        ("Cache-Control", "no-store"),
        ("X-Injected", "a\r\nSet-Cookie: x"),
        ("Bad Name", "v"),
        ("content-length", "99"),
        ("Connection", "upgrade"),
        ("X-Padded", " v"),
    ];
    let response = Response::new(Status::Ok, "text/plain\r\nX: y", b"").with_headers(&headers).to_bytes(Method::Get);
    let text = std::str::from_utf8(&response).unwrap();
    assert_eq!(
        text,
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 0\r\nConnection: close\r\n\
         Cache-Control: no-store\r\n\r\n"
    );
}

#[test]
fn every_error_response_carries_its_status_and_closes() {
    let errors = [
        (HttpError::MalformedRequestLine, 400),
        (HttpError::InvalidTarget, 400),
        (HttpError::MalformedHeader, 400),
        (HttpError::InvalidContentLength, 400),
        (HttpError::DuplicateHost, 400),
        (HttpError::MethodNotAllowed, 405),
        (HttpError::BodyNotAllowed, 413),
        (HttpError::RequestLineTooLong, 414),
        (HttpError::HeadTooLarge, 431),
        (HttpError::TooManyHeaders, 431),
        (HttpError::UnsupportedVersion, 505),
    ];
    for (error, code) in errors {
        let response = error.response();
        let text = std::str::from_utf8(&response).unwrap();
        let status = error.status();
        assert_eq!(status.code(), code);
        assert!(text.starts_with(&format!("HTTP/1.1 {code} {}\r\n", status.reason())), "{text}");
        assert!(text.contains("\r\nConnection: close\r\n"), "{text}");
        assert!(text.ends_with(&format!("\r\n\r\n{error}\n")), "{text}");
    }
}
