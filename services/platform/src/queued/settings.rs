//! The tunables every queued service has, and their `--<service>-…` flags.

use std::{marker::PhantomData, time::Duration};

use clap::{builder::ValueParser, Arg, ArgAction, ArgMatches};

use super::Domain;
use crate::{admission, consumer::ConsumerOptions};

/// Tunables of a queued service. The first eight have a flag ([`Flags`]);
/// the others keep these defaults in production (tests shorten them).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Topic of V3 events.
    pub topic: String,
    /// Partitions of the topic: created (or grown) with this many; a
    /// bucket's events go to one of them ([`promo_contracts::partition_of`]).
    pub topic_partitions: i32,
    /// Consumer group of the V3 consumer.
    pub group: String,
    /// Most events persisted in one database transaction.
    pub consumer_max_batch: usize,
    /// Most partitions' batches one consumer persists at once.
    pub consumer_parallelism: usize,
    /// Whether concurrent V3 admissions of one bucket share one counters
    /// step and one send ([`crate::coalesce`]).
    pub coalesce: Coalescing,
    /// How long an admission stays in flight before the audit may give it
    /// back ([`admission::audit`]; never below [`admission::AUDIT_AGE`] from the flag).
    pub audit_age: Duration,
    /// How long an `Idempotency-Key` claim without an answer blocks retries
    /// before one may take it over ([`crate::http::idempotency::LEASE`] by default).
    pub idempotency_lease: Duration,
    /// How long a promotion read stays cached on the hot path.
    pub cache_ttl: Duration,
    /// How long a V3 request id answers PENDING before it must be decided.
    pub ticket_ttl: Duration,
    /// How long a counter rebuild waits for its fence to be persisted.
    pub rebuild_timeout: Duration,
    /// How long the consumer waits to fill a batch.
    pub consumer_max_wait: Duration,
}

/// `--<service>-admission-coalescing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Coalescing {
    /// On when each counters step is a network round trip (Redis).
    Auto,
    /// Always.
    On,
    /// Never: each admission its own counters step and send.
    Off,
}

impl std::fmt::Display for Coalescing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use clap::ValueEnum;
        let name = self.to_possible_value().map(|v| v.get_name().to_string());
        f.write_str(name.as_deref().unwrap_or("auto"))
    }
}

impl Coalescing {
    /// Whether to coalesce over `counters`.
    pub fn over(self, counters: &dyn crate::ports::Counters) -> bool {
        match self {
            Coalescing::Auto => counters.round_trip(),
            Coalescing::On => true,
            Coalescing::Off => false,
        }
    }
}

/// Default of `--<service>-consumer-batch`.
pub const CONSUMER_BATCH: usize = 1000;

/// Default of `--<service>-consumer-parallelism`.
pub const CONSUMER_PARALLELISM: usize = 4;

impl Settings {
    /// The defaults of service `D`: its topic, group and partitions from
    /// the contracts the operator shares.
    pub fn of<D: Domain>() -> Self {
        Self {
            topic: D::TOPIC.into(),
            topic_partitions: D::PARTITIONS,
            group: D::GROUP.into(),
            consumer_max_batch: CONSUMER_BATCH,
            consumer_parallelism: CONSUMER_PARALLELISM,
            coalesce: Coalescing::Auto,
            audit_age: admission::AUDIT_AGE,
            idempotency_lease: crate::http::idempotency::LEASE,
            cache_ttl: Duration::from_millis(500),
            ticket_ttl: Duration::from_secs(24 * 3600),
            rebuild_timeout: Duration::from_secs(30),
            consumer_max_wait: Duration::from_millis(20),
        }
    }

    pub fn consumer_options(&self, service: &'static str) -> ConsumerOptions {
        ConsumerOptions {
            service,
            topic: self.topic.clone(),
            group: self.group.clone(),
            max_batch: self.consumer_max_batch,
            parallelism: self.consumer_parallelism,
            max_wait: self.consumer_max_wait,
        }
    }
}

/// The flags of [`Settings`], named after the service so `promo
/// standalone` can take several services' side by side:
/// `--coupon-topic` / `PROMO_COUPON_TOPIC`, `--timesale-topic`, ….
/// Flatten it into the service's own `clap::Args`.
#[derive(Debug, Clone)]
pub struct Flags<D> {
    pub topic: String,
    pub topic_partitions: i32,
    pub group: String,
    pub consumer_batch: usize,
    pub consumer_parallelism: usize,
    pub admission_coalescing: Coalescing,
    pub audit_age_seconds: u64,
    pub idempotency_lease_seconds: u64,
    domain: PhantomData<fn() -> D>,
}

/// `(name, help)` of each flag, in the order of [`Flags`]' fields.
const FLAGS: [(&str, &str); 8] = [
    ("topic", "Topic of V3 events."),
    (
        "topic-partitions",
        "Partitions of the topic: created, or grown, with this many at start. A \
         promotion's buckets go to distinct partitions while it has no more buckets \
         than this; every replica must be given the same number.",
    ),
    ("consumer-group", "Consumer group of the V3 consumer."),
    (
        "consumer-batch",
        "Most events persisted in one database transaction.",
    ),
    (
        "consumer-parallelism",
        "Most partitions whose events one consumer process persists at the same \
         time (one database transaction each). At least 1.",
    ),
    (
        "admission-coalescing",
        "Whether V3 admissions of one bucket arriving while the previous counters \
         step runs go to the counters in one step and their events to the queue \
         together (each request is still answered after its own event is stored). \
         auto: on with Redis (a step is a round trip), off with the in-process \
         counters (where it measured no gain).",
    ),
    (
        "audit-age-seconds",
        "Seconds an admission stays in flight (counted, its event not yet persisted) \
         before the audit may give it back when no event arrived. At least 11 (the \
         queue's delivery timeout is 10 s).",
    ),
    (
        "idempotency-lease-seconds",
        "Seconds an Idempotency-Key whose first request never answered (its process \
         died) answers 409 before a retry may run it again; the retry answers from the \
         first request's effect if it happened. Keep it above the longest a request \
         can take; at least 5.",
    ),
];

impl<D: Domain> Flags<D> {
    fn id(name: &str) -> String {
        format!("{}-{name}", D::SERVICE)
    }

    /// The settings these flags make (the rest at their defaults), with
    /// their floors applied.
    pub fn settings(&self) -> Settings {
        let delivery = crate::ports::queue::DELIVERY_TIMEOUT.as_secs();
        Settings {
            topic: self.topic.clone(),
            topic_partitions: self.topic_partitions.max(1),
            group: self.group.clone(),
            consumer_max_batch: self.consumer_batch.max(1),
            consumer_parallelism: self.consumer_parallelism.max(1),
            coalesce: self.admission_coalescing,
            audit_age: Duration::from_secs(self.audit_age_seconds.max(delivery + 1)),
            idempotency_lease: Duration::from_secs(self.idempotency_lease_seconds.max(5)),
            ..Settings::of::<D>()
        }
    }

    fn value<T: Clone + Send + Sync + 'static>(
        m: &ArgMatches,
        name: &str,
    ) -> Result<T, clap::Error> {
        m.get_one::<T>(&Self::id(name)).cloned().ok_or_else(|| {
            clap::Error::raw(
                clap::error::ErrorKind::MissingRequiredArgument,
                format!("--{} is missing", Self::id(name)),
            )
        })
    }
}

impl<D: Domain> clap::FromArgMatches for Flags<D> {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(Self {
            topic: Self::value(m, FLAGS[0].0)?,
            topic_partitions: Self::value(m, FLAGS[1].0)?,
            group: Self::value(m, FLAGS[2].0)?,
            consumer_batch: Self::value(m, FLAGS[3].0)?,
            consumer_parallelism: Self::value(m, FLAGS[4].0)?,
            admission_coalescing: Self::value(m, FLAGS[5].0)?,
            audit_age_seconds: Self::value(m, FLAGS[6].0)?,
            idempotency_lease_seconds: Self::value(m, FLAGS[7].0)?,
            domain: PhantomData,
        })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl<D: Domain> clap::Args for Flags<D> {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let defaults = Settings::of::<D>();
        let values: [(String, ValueParser); 8] = [
            (defaults.topic, ValueParser::string()),
            (
                defaults.topic_partitions.to_string(),
                clap::value_parser!(i32).into(),
            ),
            (defaults.group, ValueParser::string()),
            (
                defaults.consumer_max_batch.to_string(),
                clap::value_parser!(usize).into(),
            ),
            (
                defaults.consumer_parallelism.to_string(),
                clap::value_parser!(usize).into(),
            ),
            (
                defaults.coalesce.to_string(),
                clap::builder::EnumValueParser::<Coalescing>::new().into(),
            ),
            (
                defaults.audit_age.as_secs().to_string(),
                clap::value_parser!(u64).into(),
            ),
            (
                defaults.idempotency_lease.as_secs().to_string(),
                clap::value_parser!(u64).into(),
            ),
        ];
        FLAGS
            .iter()
            .zip(values)
            .fold(cmd, |cmd, ((name, help), (default, parser))| {
                let id = Self::id(name);
                let upper = id.to_uppercase().replace('-', "_");
                cmd.arg(
                    Arg::new(id.clone())
                        .long(id)
                        .env(format!("PROMO_{upper}"))
                        .value_name(upper)
                        .help(*help)
                        .action(ArgAction::Set)
                        .value_parser(parser)
                        .default_value(default),
                )
            })
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}
