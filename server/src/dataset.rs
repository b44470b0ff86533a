//! The deterministic users dataset: the same `(count, seed)` gives the same JSON bytes on every
//! machine, run and endpoint, so a checker can know the exact expected body of any response.

// Design notes for maintainers:
// - The generator is ChaCha8 from `rand_chacha`, seeded with the 32 bytes
//   `seed.to_le_bytes() ++ [0; 24]`; rand_chacha documents its output as portable and reproducible,
//   and the byte-exact unit tests below fail if a dependency update ever changes it.
// - Users are drawn one after another from a single stream, so the first N users of any larger
//   `count` are the same N users: the body size grows monotonically with `count`.
// - Choices use `next_u64() % len`; the bias is below 2^-50 for these list sizes and, more to the
//   point, it is deterministic.
// - All names, domains and phone numbers are fictional (example.* domains, 555 exchange).

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

/// The largest `count` a request may ask for: about 3.7 MB of JSON, well above the default and
/// small enough that one request cannot make a service allocate without bound.
pub const MAX_COUNT: u32 = 10_000;

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

/// The exact JSON body (a compact array) both endpoints return for `count` users from `seed`.
pub fn users_json(count: u32, seed: u64) -> Vec<u8> {
    let users = users(count, seed);
    serde_json::to_vec(&users).expect("a Vec<User> has only string keys and always serializes")
}

/// The first `count` users drawn from `seed`.
pub fn users(count: u32, seed: u64) -> Vec<User> {
    let mut draw = Draw::new(seed);
    (1..=count).map(|id| draw.user(id)).collect()
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
mod tests {
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

    #[test]
    fn max_count_body_fits_in_a_few_megabytes() {
        let len = users_json(MAX_COUNT, DEFAULT_SEED).len();
        assert!((3_000_000..5_000_000).contains(&len), "{len}");
    }
}
