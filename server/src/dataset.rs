//! The deterministic users dataset: the same `(count, seed)` gives the same JSON bytes on every
//! machine, run and endpoint, so a checker can know the exact expected body of any response.
//! Bodies are written one user at a time into any [`Write`] ([`write_users_json`]), so a body of
//! [`MAX_COUNT`] users (~91 MiB) never needs the whole dataset, or the whole body, in memory.

// Design notes for maintainers:
// - The generator is ChaCha8 from `rand_chacha`, seeded with the 32 bytes
//   `seed.to_le_bytes() ++ [0; 24]`; rand_chacha documents its output as portable and reproducible,
//   and the byte-exact unit tests below fail if a dependency update ever changes it.
// - Users are drawn one after another from a single stream, so the first N users of any larger
//   `count` are the same N users: the body size grows monotonically with `count`.
// - Choices use `next_u64() % len`; the bias is below 2^-50 for these list sizes and, more to the
//   point, it is deterministic.
// - All names, domains and phone numbers are fictional (example.* domains, 555 exchange).
// - There is one serializer, `write_json_array`: it writes `[`, the users separated by `,`, and
//   `]`, each user serialized by sonic-rs into a record buffer and then written whole. sonic-rs
//   writes the same compact JSON as serde_json (a unit test holds the whole body to serde_json's
//   output of the whole `Vec<User>`) in about two thirds of the time: its string escaping scans
//   with SIMD. In-memory bodies are the same writer aimed at a `Vec`.

use std::borrow::Borrow;
use std::io::{self, BufWriter, Write};

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use serde::Serialize;

/// The payload size the seed report measured (`~251 KB (256,873 bytes)`), which
/// [`DEFAULT_COUNT`] approaches.
pub const SEED_REPORT_PAYLOAD_BYTES: usize = 256_873;

/// The seed used when a request names none: the first seed, counting up from 0, for which some
/// count gives a body of exactly [`SEED_REPORT_PAYLOAD_BYTES`] (found by a one-off search over
/// seeds and counts; the unit tests pin the result).
pub const DEFAULT_SEED: u64 = 28;

/// The user count whose body (with [`DEFAULT_SEED`]) is exactly [`SEED_REPORT_PAYLOAD_BYTES`],
/// 256,873 bytes.
pub const DEFAULT_COUNT: u32 = 708;

/// The largest `count` a request may ask for: 262,144 (2^18) users, 95,663,254 bytes (91.2 MiB)
/// of JSON with [`DEFAULT_SEED`] (measured; ~365 bytes a user). Every seed reaches at least
/// 64 MiB at this count: no user serializes to fewer than [`MIN_USER_BYTES`] bytes with its
/// separating comma, and 262,144 x 298 = 78,118,912 bytes > 67,108,864 (a unit test derives the
/// bound from the word lists). The cap still bounds what one request can cost: bodies are
/// written in bounded chunks, never held whole unless a cache keeps them.
pub const MAX_COUNT: u32 = 262_144;

/// A lower bound on the bytes one user adds to a body (its JSON object and the comma before
/// it): every field at its shortest choice, as `tests::shortest_user` builds it.
pub const MIN_USER_BYTES: u64 = 298;

/// Bytes [`write_json_array`] gathers before it writes to its destination: each write the
/// destination sees is at most this large and, but for the last, short of it by less than one
/// user's record (the buffer goes out when the next record does not fit), whatever the destination
/// is (a `Vec`, a channel to a socket, a memfd), so a destination needs no buffering of its own.
pub const WRITE_CHUNK_BYTES: usize = 64 << 10;

/// One user record, in the field order it is serialized.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: u32,
    pub first_name: &'static str,
    pub last_name: &'static str,
    pub email: String,
    pub phone: String,
    pub address: Address,
    pub company: String,
    pub job_title: String,
    pub created_at: String,
    pub tags: Vec<&'static str>,
}

impl User {
    /// Bytes this record holds in memory, its strings' buffers included (for cache bounds).
    pub fn memory_bytes(&self) -> usize {
        let strings = [
            &self.email,
            &self.phone,
            &self.company,
            &self.job_title,
            &self.created_at,
            &self.address.street,
            &self.address.postal_code,
        ];
        std::mem::size_of::<User>()
            + strings.iter().map(|text| text.capacity()).sum::<usize>()
            + self.tags.capacity() * std::mem::size_of::<&str>()
    }
}

/// A user's postal address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Address {
    pub street: String,
    pub city: &'static str,
    pub state: &'static str,
    pub postal_code: String,
    pub country: &'static str,
}

/// The exact JSON body (a compact array) both endpoints return for `count` users from `seed`,
/// in memory: [`write_users_json`] into a `Vec`.
pub fn users_json(count: u32, seed: u64) -> Vec<u8> {
    let mut body = Vec::with_capacity(users_json_capacity(count));
    write_users_json(count, seed, &mut body).expect("writing into a Vec cannot fail");
    body
}

/// The fewest bytes a body of `count` users can have, whatever the seed ([`MIN_USER_BYTES`]
/// each, the first without its comma, and the brackets).
pub fn users_json_min_len(count: u32) -> u64 {
    2 + (u64::from(count) * MIN_USER_BYTES).saturating_sub(1)
}

/// The buffer [`users_json`] allocates for `count` users, which the body never outgrows.
/// Records average ~365 bytes; reserving 512 each means one allocation instead of a dozen
/// grow-and-copy steps, and untouched capacity costs no memory pages.
pub fn users_json_capacity(count: u32) -> usize {
    2 + count as usize * 512
}

/// Writes the body of `count` users from `seed` (the bytes of [`users_json`]) into `out`,
/// generating each user just before it is serialized: memory stays at one user and one
/// [`WRITE_CHUNK_BYTES`] buffer whatever `count` is. Returns the number of bytes written; on
/// an error from `out` stops there and returns it.
pub fn write_users_json(count: u32, seed: u64, out: &mut impl Write) -> io::Result<u64> {
    write_json_array(generated_users(count, seed), out)
}

/// Writes `users` as one compact JSON array into `out`, in chunks of [`WRITE_CHUNK_BYTES`],
/// and returns the number of bytes written. The one serializer of users bodies.
pub fn write_json_array<U: Borrow<User>>(
    users: impl IntoIterator<Item = U>,
    out: &mut impl Write,
) -> io::Result<u64> {
    // Counted below the buffer: it sees one write a chunk, not one a record.
    let mut buffered = BufWriter::with_capacity(
        WRITE_CHUNK_BYTES,
        Counted {
            inner: out,
            written: 0,
        },
    );
    let outcome = write_array(users, &mut buffered);
    // Dropping a BufWriter flushes it: after a failed write that would try the destination
    // that just failed once more (and wait on it again). What is left is discarded instead;
    // after a success nothing is.
    let (counted, _unwritten) = buffered.into_parts();
    outcome.map(|()| counted.written)
}

fn write_array<U: Borrow<User>>(
    users: impl IntoIterator<Item = U>,
    out: &mut impl Write,
) -> io::Result<()> {
    // One record (~365 bytes) serialized at a time: sonic-rs writes into a `Vec` of its own,
    // and the destination gets the record whole.
    let mut record = Vec::with_capacity(1024);
    out.write_all(b"[")?;
    for (index, user) in users.into_iter().enumerate() {
        record.clear();
        if index > 0 {
            record.push(b',');
        }
        // Nothing in a record can fail to serialize (string keys, no maps or floats), and a
        // `Vec` cannot fail to take it; an error would still end the body, never skip a user.
        sonic_rs::to_writer(&mut record, user.borrow()).map_err(io::Error::other)?;
        out.write_all(&record)?;
    }
    out.write_all(b"]")?;
    out.flush()
}

/// The first `count` users drawn from `seed`, held in memory.
pub fn users(count: u32, seed: u64) -> Vec<User> {
    generated_users(count, seed).collect()
}

/// The first `count` users drawn from `seed`, each generated when the iterator is advanced.
pub fn generated_users(count: u32, seed: u64) -> impl Iterator<Item = User> {
    let mut draw = Draw::new(seed);
    (1..=count).map(move |id| draw.user(id))
}

/// A writer that counts the bytes passed through it.
struct Counted<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.written += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

const FIRST_NAMES: &[&str] = &[
    "Olivia",
    "Liam",
    "Emma",
    "Noah",
    "Ava",
    "Elijah",
    "Sophia",
    "James",
    "Isabella",
    "William",
    "Mia",
    "Benjamin",
    "Charlotte",
    "Lucas",
    "Amelia",
    "Henry",
    "Harper",
    "Theodore",
    "Evelyn",
    "Jack",
    "Abigail",
    "Levi",
    "Emily",
    "Alexander",
    "Ella",
    "Jackson",
    "Elizabeth",
    "Mateo",
    "Camila",
    "Daniel",
    "Luna",
    "Michael",
    "Sofia",
    "Mason",
    "Avery",
    "Sebastian",
    "Mila",
    "Ethan",
    "Aria",
    "Logan",
    "Scarlett",
    "Owen",
    "Penelope",
    "Samuel",
    "Layla",
    "Jacob",
    "Chloe",
    "Asher",
    "Victoria",
    "Aiden",
];

const LAST_NAMES: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Torres",
    "Nguyen",
    "Hill",
    "Flores",
    "Green",
    "Adams",
    "Nelson",
    "Baker",
    "Hall",
    "Rivera",
    "Campbell",
    "Mitchell",
    "Carter",
    "Roberts",
];

const EMAIL_DOMAINS: &[&str] = &["example.com", "example.org", "example.net"];

const STREET_NAMES: &[&str] = &[
    "Maple",
    "Oak",
    "Pine",
    "Cedar",
    "Elm",
    "Washington",
    "Lake",
    "Hill",
    "Park",
    "Main",
    "Sunset",
    "Ridge",
    "Willow",
    "Highland",
    "River",
    "Church",
    "Spring",
    "Meadow",
    "Forest",
    "Lincoln",
];

const STREET_KINDS: &[&str] = &[
    "Street",
    "Avenue",
    "Road",
    "Lane",
    "Drive",
    "Court",
    "Boulevard",
];

/// (city, state) pairs, so a city is never placed in the wrong state.
const CITIES: &[(&str, &str)] = &[
    ("Springfield", "IL"),
    ("Portland", "OR"),
    ("Austin", "TX"),
    ("Denver", "CO"),
    ("Madison", "WI"),
    ("Raleigh", "NC"),
    ("Boise", "ID"),
    ("Columbus", "OH"),
    ("Albany", "NY"),
    ("Sacramento", "CA"),
    ("Tucson", "AZ"),
    ("Richmond", "VA"),
    ("Omaha", "NE"),
    ("Burlington", "VT"),
    ("Savannah", "GA"),
    ("Spokane", "WA"),
];

const COMPANY_STEMS: &[&str] = &[
    "Northwind",
    "Contoso",
    "Globex",
    "Initech",
    "Umbrella",
    "Stark",
    "Wayne",
    "Acme",
    "Hooli",
    "Vandelay",
    "Soylent",
    "Tyrell",
    "Cyberdyne",
    "Wonka",
    "Gringotts",
    "Oscorp",
];

const COMPANY_KINDS: &[&str] = &[
    "Analytics",
    "Systems",
    "Logistics",
    "Labs",
    "Holdings",
    "Software",
    "Dynamics",
    "Foods",
    "Energy",
    "Consulting",
];

const JOB_LEVELS: &[&str] = &["Junior", "", "Senior", "Staff", "Principal", "Lead"];

const JOB_ROLES: &[&str] = &[
    "Software Engineer",
    "Data Engineer",
    "Product Manager",
    "Designer",
    "Accountant",
    "Sales Representative",
    "Support Specialist",
    "Site Reliability Engineer",
    "Data Scientist",
    "Recruiter",
    "Technical Writer",
    "Security Analyst",
];

const TAGS: &[&str] = &[
    "premium",
    "beta-tester",
    "newsletter",
    "early-adopter",
    "enterprise",
    "trial",
    "vip",
    "referral",
    "mobile",
    "inactive",
];

/// The single random stream users are drawn from.
struct Draw {
    rng: ChaCha8Rng,
}

impl Draw {
    fn new(seed: u64) -> Draw {
        let mut key = [0_u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        Draw {
            rng: ChaCha8Rng::from_seed(key),
        }
    }

    /// A number in `low..=high`.
    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.rng.next_u64() % (high - low + 1)
    }

    fn pick<T: Copy>(&mut self, choices: &[T]) -> T {
        choices[self.between(0, choices.len() as u64 - 1) as usize]
    }

    fn user(&mut self, id: u32) -> User {
        let first_name = self.pick(FIRST_NAMES);
        let last_name = self.pick(LAST_NAMES);
        let email = format!(
            "{}.{}{}@{}",
            first_name.to_ascii_lowercase(),
            last_name.to_ascii_lowercase(),
            self.between(1, 99),
            self.pick(EMAIL_DOMAINS),
        );
        let phone = format!(
            "+1-{}-555-{:04}",
            self.between(201, 989),
            self.between(100, 199)
        );
        let address = self.address();
        let company = format!("{} {}", self.pick(COMPANY_STEMS), self.pick(COMPANY_KINDS));
        let job_title = match self.pick(JOB_LEVELS) {
            "" => self.pick(JOB_ROLES).to_owned(),
            level => format!("{level} {}", self.pick(JOB_ROLES)),
        };
        let created_at = self.timestamp();
        let tags = self.tags();
        User {
            id,
            first_name,
            last_name,
            email,
            phone,
            address,
            company,
            job_title,
            created_at,
            tags,
        }
    }

    fn address(&mut self) -> Address {
        let street = format!(
            "{} {} {}",
            self.between(1, 9999),
            self.pick(STREET_NAMES),
            self.pick(STREET_KINDS)
        );
        let (city, state) = self.pick(CITIES);
        Address {
            street,
            city,
            state,
            postal_code: format!("{:05}", self.between(10_000, 99_999)),
            country: "US",
        }
    }

    /// An RFC 3339 UTC timestamp from 2015 to 2024; days stop at 28 so every date is valid
    /// without calendar arithmetic.
    fn timestamp(&mut self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            self.between(2015, 2024),
            self.between(1, 12),
            self.between(1, 28),
            self.between(0, 23),
            self.between(0, 59),
            self.between(0, 59),
        )
    }

    /// One to four distinct tags, in list order.
    fn tags(&mut self) -> Vec<&'static str> {
        let wanted = self.between(1, 4) as usize;
        let mut chosen = Vec::with_capacity(wanted);
        while chosen.len() < wanted {
            let tag = self.pick(TAGS);
            if !chosen.contains(&tag) {
                chosen.push(tag);
            }
        }
        chosen.sort_by_key(|tag| TAGS.iter().position(|known| known == tag));
        chosen
    }
}

#[cfg(test)]
mod tests;
