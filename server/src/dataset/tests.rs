use super::*;

#[test]
fn default_body_has_the_documented_size() {
    assert_eq!(users_json(DEFAULT_COUNT, DEFAULT_SEED).len(), 256_873);
}

#[test]
fn default_count_is_the_closest_to_the_seed_payload() {
    let distance = |count| {
        users_json(count, DEFAULT_SEED)
            .len()
            .abs_diff(SEED_REPORT_PAYLOAD_BYTES)
    };
    let best = distance(DEFAULT_COUNT);
    assert!(best <= distance(DEFAULT_COUNT - 1));
    assert!(best <= distance(DEFAULT_COUNT + 1));
}

#[test]
fn same_seed_gives_identical_bytes_and_other_seeds_differ() {
    assert_eq!(users_json(50, 7), users_json(50, 7));
    assert_ne!(users_json(50, 7), users_json(50, 8));
}

#[test]
fn first_user_of_the_default_seed_is_pinned() {
    let first = serde_json::to_string(&users(1, DEFAULT_SEED)[0]).unwrap();
    assert_eq!(first, FIRST_DEFAULT_USER);
}

const FIRST_DEFAULT_USER: &str = concat!(
    r#"{"id":1,"first_name":"James","last_name":"Hill","email":"james.hill44@example.org","#,
    r#""phone":"+1-486-555-0127","address":{"street":"1814 Forest Street","city":"Richmond","#,
    r#""state":"VA","postal_code":"85296","country":"US"},"company":"Globex Labs","#,
    r#""job_title":"Principal Data Engineer","created_at":"2021-09-20T02:00:40Z","#,
    r#""tags":["referral"]}"#,
);

#[test]
fn default_body_checksum_is_pinned() {
    let crc = crc32fast::hash(&users_json(DEFAULT_COUNT, DEFAULT_SEED));
    assert_eq!(format!("{crc:08x}"), DEFAULT_BODY_CRC32);
}

const DEFAULT_BODY_CRC32: &str = "5c2a5546";

#[test]
fn smaller_counts_are_prefixes_of_larger_ones() {
    assert_eq!(users(10, 3), users(20, 3)[..10]);
}

#[test]
fn body_is_a_json_array_of_count_users_with_sequential_ids() {
    let parsed: Vec<serde_json::Value> = serde_json::from_slice(&users_json(25, 9)).unwrap();
    assert_eq!(parsed.len(), 25);
    for (index, user) in parsed.iter().enumerate() {
        assert_eq!(user["id"], index + 1);
        assert!(user["email"].as_str().unwrap().contains("@example."));
        let tags = user["tags"].as_array().unwrap();
        assert!((1..=4).contains(&tags.len()));
    }
}

#[test]
fn zero_users_is_an_empty_array() {
    assert_eq!(users_json(0, DEFAULT_SEED), b"[]");
}

/// The pins the Python port (server/python/tests/test_dataset.py) checks against too.
#[test]
fn larger_bodies_are_pinned() {
    for (count, seed, len, pinned) in [
        (2_000, 1, 725_873, "4083193f"),
        (10_000, DEFAULT_SEED, 3_633_046, "ac5f2dff"),
    ] {
        let body = users_json(count, seed);
        assert_eq!(body.len(), len, "{count} users, seed {seed}");
        let crc = crc32fast::hash(&body);
        assert_eq!(format!("{crc:08x}"), pinned, "{count} users, seed {seed}");
    }
}

/// The serializer against its specification: serde_json's output for the whole array.
#[test]
fn written_body_is_serde_json_of_the_whole_array() {
    for (count, seed) in [
        (0, 1),
        (1, DEFAULT_SEED),
        (2, 5),
        (DEFAULT_COUNT, 9),
        (3_000, 2),
    ] {
        let whole = serde_json::to_vec(&users(count, seed)).unwrap();
        let mut written = Vec::new();
        let len = write_users_json(count, seed, &mut written).unwrap();
        assert_eq!(written, whole, "{count} users, seed {seed}");
        assert_eq!(len, whole.len() as u64);
        assert_eq!(users_json(count, seed), whole);
    }
}

/// Records the size of every write and accepts at most `limit` bytes per call.
struct Recorder {
    body: Vec<u8>,
    writes: Vec<usize>,
    limit: usize,
}

impl Write for Recorder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let taken = buf.len().min(self.limit);
        self.writes.push(buf.len());
        self.body.extend_from_slice(&buf[..taken]);
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn destination_sees_whole_chunks_and_may_take_them_in_parts() {
    let expected = users_json(2_000, 4);
    let mut recorder = Recorder {
        body: Vec::new(),
        writes: Vec::new(),
        limit: usize::MAX,
    };
    write_users_json(2_000, 4, &mut recorder).unwrap();
    assert_eq!(recorder.body, expected);
    let (last, whole) = recorder.writes.split_last().unwrap();
    // No record of these users is near 1 KiB long.
    let nearly_full = WRITE_CHUNK_BYTES - 1024..=WRITE_CHUNK_BYTES;
    assert!(
        whole.iter().all(|len| nearly_full.contains(len)),
        "{whole:?}"
    );
    assert!((1..=WRITE_CHUNK_BYTES).contains(last));

    let mut short_writes = Recorder {
        body: Vec::new(),
        writes: Vec::new(),
        limit: 1_000,
    };
    write_users_json(2_000, 4, &mut short_writes).unwrap();
    assert_eq!(short_writes.body, expected);
}

/// Fails every write after the first `accepted` bytes, counting the attempts.
struct Failing {
    accepted: usize,
    attempts_after_failure: usize,
    failed: bool,
}

impl Write for Failing {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.failed {
            self.attempts_after_failure += 1;
        }
        if buf.len() > self.accepted {
            self.failed = true;
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        self.accepted -= buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A destination that fails (a client gone) ends the writing with its error, and is not
/// written to again (a BufWriter dropped unflushed would try once more).
#[test]
fn a_failing_destination_stops_the_writing_with_its_error() {
    let mut failing = Failing {
        accepted: 2 * WRITE_CHUNK_BYTES,
        attempts_after_failure: 0,
        failed: false,
    };
    let error = write_users_json(10_000, 1, &mut failing).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
    assert!(failing.failed);
    assert_eq!(failing.attempts_after_failure, 0);
}

/// Every field at its shortest choice: no generated user serializes shorter than this.
/// Mirrors the formats in `Draw::user` (the email's and street's numbers have at least one
/// digit; the phone, postal code and timestamp have fixed widths).
fn shortest_user() -> User {
    fn shortest<'a>(words: impl IntoIterator<Item = &'a str>) -> &'a str {
        words.into_iter().min_by_key(|word| word.len()).unwrap()
    }
    let first_name = shortest(FIRST_NAMES.iter().copied());
    let last_name = shortest(LAST_NAMES.iter().copied());
    let (city, state) = *CITIES.iter().min_by_key(|(city, _)| city.len()).unwrap();
    let job_title = JOB_LEVELS
        .iter()
        .flat_map(|level| JOB_ROLES.iter().map(move |role| (level, role)))
        .map(|(level, role)| match *level {
            "" => (*role).to_owned(),
            level => format!("{level} {role}"),
        })
        .min_by_key(String::len)
        .unwrap();
    User {
        id: 1,
        first_name,
        last_name,
        email: format!(
            "{}.{}1@{}",
            first_name.to_ascii_lowercase(),
            last_name.to_ascii_lowercase(),
            shortest(EMAIL_DOMAINS.iter().copied())
        ),
        phone: "+1-201-555-0100".to_owned(),
        address: Address {
            street: format!(
                "1 {} {}",
                shortest(STREET_NAMES.iter().copied()),
                shortest(STREET_KINDS.iter().copied())
            ),
            city,
            state,
            postal_code: "10000".to_owned(),
            country: "US",
        },
        company: format!(
            "{} {}",
            shortest(COMPANY_STEMS.iter().copied()),
            shortest(COMPANY_KINDS.iter().copied())
        ),
        job_title,
        created_at: "2015-01-01T00:00:00Z".to_owned(),
        tags: vec![shortest(TAGS.iter().copied())],
    }
}

#[test]
fn min_user_bytes_is_the_shortest_user_and_its_comma() {
    let shortest = serde_json::to_vec(&shortest_user()).unwrap().len() as u64;
    assert_eq!(shortest + 1, MIN_USER_BYTES);
}

/// The bound is only a bound if no real user beats it: 20,000 users over four seeds.
#[test]
fn no_generated_user_is_shorter_than_the_bound() {
    for seed in [0, 1, DEFAULT_SEED, u64::MAX] {
        for user in generated_users(5_000, seed) {
            let len = serde_json::to_vec(&user).unwrap().len() as u64;
            assert!(len + 1 >= MIN_USER_BYTES, "seed {seed}: {user:?}");
        }
    }
}

/// At the cap every seed gives at least 64 MiB: a body of n users is `[`, n users, n - 1
/// commas and `]`, so at least 1 + n x MIN_USER_BYTES bytes.
#[test]
fn every_seed_reaches_64_mib_at_the_cap() {
    let at_least = users_json_min_len(MAX_COUNT);
    assert_eq!(at_least, 1 + u64::from(MAX_COUNT) * MIN_USER_BYTES);
    assert!(at_least >= 64 << 20, "{at_least}");
}

/// The two bounds the services size bodies by, before making them, hold around real ones.
#[test]
fn bodies_lie_between_their_bounds() {
    for (count, seed) in [
        (0, 1),
        (1, 2),
        (DEFAULT_COUNT, DEFAULT_SEED),
        (3_000, u64::MAX),
    ] {
        let len = users_json(count, seed).len();
        assert!(
            users_json_min_len(count) <= len as u64,
            "{count} users: {len}"
        );
        assert!(len <= users_json_capacity(count), "{count} users: {len}");
    }
}
