//! The claim record (`docs/arbiter.md`) of every provider against its simulated cloud, through
//! the `Provider` trait: `state()` after `claim()` shows the record; a claim based on a stale
//! read is a conflict that changes nothing; two claims made at once leave one record, and with a
//! compare-and-swap provider at most one of them succeeds (with Exoscale's write-then-verify,
//! the one the record names did); the user's other labels, description text and tags survive.
//!
//! Each test starts its own simulator on loopback and is bounded with `tokio::time::timeout`.

mod sim_common;

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use exoip_providers::http::RetryPolicy;
use exoip_providers::sim::{self, Faults, HolderEvent, SimConfig, SimHandle, TimelineEvent};
use exoip_providers::{AddressState, Arbiter, ClaimRecord, Error, InstanceId, Provider};

/// Bound of every test.
const TEST_LIMIT: Duration = Duration::from_secs(40);

async fn bounded<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(TEST_LIMIT, test)
        .await
        .expect("the test finished within its time limit")
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn id(s: &str) -> InstanceId {
    InstanceId::from(s)
}

fn record(epoch: u64, holder: &str) -> ClaimRecord {
    ClaimRecord {
        epoch,
        holder: id(holder),
    }
}

fn retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
        max_elapsed: Duration::from_secs(5),
    }
}

fn kind<T: std::fmt::Debug>(result: Result<T, Error>, want: &str, what: &str) -> Error {
    let e = result.expect_err(what);
    assert_eq!(e.kind(), want, "{what}: {e}");
    e
}

/// The timeline's `claim` events for `address`: (epoch, claimant).
fn claims(events: &[TimelineEvent], address: IpAddr) -> Vec<(u64, String)> {
    events
        .iter()
        .filter(|e| e.ip == address && e.event == HolderEvent::Claim)
        .map(|e| {
            (
                e.epoch.expect("a claim event has an epoch"),
                e.instance.0.clone(),
            )
        })
        .collect()
}

/// Runs the claims of `claimants` at the same time (each on its own task) and returns their
/// results in the same order.
async fn race<P: Provider>(
    claimants: Vec<(Arc<P>, ClaimRecord)>,
    address: IpAddr,
    seen: Option<u64>,
) -> Vec<Result<(), Error>> {
    let barrier = Arc::new(tokio::sync::Barrier::new(claimants.len()));
    let tasks: Vec<_> = claimants
        .into_iter()
        .map(|(provider, record)| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                provider.claim(address, &record, seen).await
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("the claim task ran"));
    }
    out
}

/// The compare-and-swap outcome of a race: exactly one claim won (both read the same record,
/// and one of the writes must come first), the record and the holders name it.
fn assert_one_winner(
    results: &[Result<(), Error>],
    records: &[ClaimRecord],
    state: &AddressState,
    what: &str,
) {
    let won: Vec<usize> = (0..results.len()).filter(|&i| results[i].is_ok()).collect();
    assert_eq!(won.len(), 1, "{what}: {results:?}");
    for (i, r) in results.iter().enumerate() {
        if let Err(e) = r {
            assert_eq!(e.kind(), "conflict", "{what}: claim {i}: {e}");
        }
    }
    let winner = &records[won[0]];
    assert_eq!(state.record.as_ref(), Some(winner), "{what}");
    assert_eq!(state.holders, vec![winner.holder.clone()], "{what}");
}

// ---------------------------------------------------------------------------------------------
// Exoscale: labels on the elastic IP, write-then-verify

mod exoscale {
    use super::sim_common::{self as common, Api, EIP, EIP_ID, LB1, LB2};
    use super::*;
    use exoip_providers::exoscale::{Exoscale, ExoscaleConfig};
    use exoip_providers::Secret;
    use serde_json::{json, Value};

    /// lb3 of the common seed is stopped: a fourth, running instance to race with.
    const LB4: &str = "2f6a9a43-0000-4000-8000-000000000014";

    fn seed() -> exoip_providers::sim::Seed {
        let mut seed = common::seed();
        let mut lb4 = seed.instances[1].clone();
        lb4.id = LB4.into();
        lb4.name = "lb4".into();
        lb4.public_ip = Some("192.0.2.14".parse().unwrap());
        lb4.public_ipv6 = None;
        lb4.manager = None;
        seed.instances.push(lb4);
        seed.validate().expect("valid seed");
        seed
    }

    async fn start(faults: Faults) -> SimHandle {
        sim::start(SimConfig {
            faults,
            ..SimConfig::new(seed())
        })
        .await
        .expect("the simulator starts")
    }

    fn client(sim: &SimHandle, me: &str) -> Exoscale {
        let mut cfg = ExoscaleConfig::new(common::KEY, Secret::new(common::SECRET));
        cfg.endpoint = sim.api_url();
        cfg.instance_id = Some(id(me));
        cfg.request_timeout = Duration::from_secs(2);
        cfg.operation_timeout = Duration::from_secs(5);
        cfg.retry = retry();
        Exoscale::new(cfg).expect("valid configuration")
    }

    async fn eip(sim: &SimHandle) -> Value {
        let reply = Api::new(sim).get(&format!("/v2/elastic-ip/{EIP_ID}")).await;
        assert_eq!(reply.status, 200, "{}", reply.json);
        reply.json
    }

    #[tokio::test]
    async fn a_claim_is_recorded_in_the_labels_and_read_back_by_state() {
        bounded(async {
            let sim = start(Faults::default()).await;
            let lb2 = client(&sim, LB2);
            assert_eq!(lb2.arbiter(), Arbiter::WriteThenVerify);
            let before = lb2.state(ip(EIP)).await.expect("state");
            assert_eq!(before.holders, vec![id(LB1)]);
            assert_eq!(before.record, None);

            lb2.claim(ip(EIP), &record(1, LB2), None)
                .await
                .expect("claim");
            let after = lb2.state(ip(EIP)).await.expect("state");
            // The core fences the old holder itself: the claim only attaches.
            assert_eq!(after.holders, vec![id(LB1), id(LB2)]);
            assert_eq!(after.record, Some(record(1, LB2)));
            let json = eip(&sim).await;
            assert_eq!(
                json["labels"],
                json!({"k": "v", "exoip-epoch": "1", "exoip-holder": LB2}),
                "other labels survive"
            );
            assert_eq!(json["description"], "exoip test", "the description stays");

            // The next claim builds on it; another client sees the same record.
            let lb1 = client(&sim, LB1);
            assert_eq!(
                lb1.state(ip(EIP)).await.unwrap().record,
                Some(record(1, LB2))
            );
            lb1.claim(ip(EIP), &record(2, LB1), Some(1))
                .await
                .expect("second claim");
            assert_eq!(
                lb1.state(ip(EIP)).await.unwrap().record,
                Some(record(2, LB1))
            );
            assert_eq!(
                claims(&sim.timeline(), ip(EIP)),
                vec![(1, LB2.to_string()), (2, LB1.to_string())]
            );
            let state = sim.state();
            let shown = &state["zones"][0]["elastic_ips"][0];
            assert_eq!(
                shown["record"],
                json!({"epoch": 2, "holder": LB1}),
                "{state}"
            );
        })
        .await;
    }

    #[tokio::test]
    async fn a_claim_on_a_stale_read_is_a_conflict_and_changes_nothing() {
        bounded(async {
            let sim = start(Faults::default()).await;
            let lb2 = client(&sim, LB2);
            lb2.claim(ip(EIP), &record(3, LB2), None)
                .await
                .expect("claim");
            let events = sim.timeline().len();
            let labels = eip(&sim).await["labels"].clone();
            let lb4 = client(&sim, LB4);
            for seen in [None, Some(2), Some(5)] {
                let e = kind(
                    lb4.claim(ip(EIP), &record(6, LB4), seen).await,
                    "conflict",
                    "stale seen",
                );
                assert!(e.to_string().contains("epoch 3"), "{e}");
            }
            kind(
                lb4.claim(ip(EIP), &record(3, LB4), Some(3)).await,
                "invalid",
                "an epoch that does not grow",
            );
            let state = lb4.state(ip(EIP)).await.unwrap();
            assert_eq!(state.holders, vec![id(LB1), id(LB2)]);
            assert_eq!(state.record, Some(record(3, LB2)));
            assert_eq!(eip(&sim).await["labels"], labels);
            assert_eq!(sim.timeline().len(), events, "no attach, no label change");
        })
        .await;
    }

    #[tokio::test]
    async fn concurrent_claims_leave_the_record_of_one_that_succeeded() {
        bounded(async {
            // Operations take a while, so that both claims read before either writes.
            let sim = start(Faults {
                op_delay: Duration::from_millis(60),
                ..Faults::default()
            })
            .await;
            let lb2 = Arc::new(client(&sim, LB2));
            let lb4 = Arc::new(client(&sim, LB4));
            let mut seen = None;
            for round in 1..=4u64 {
                let records = [record(round, LB2), record(round, LB4)];
                let results = race(
                    vec![
                        (lb2.clone(), records[0].clone()),
                        (lb4.clone(), records[1].clone()),
                    ],
                    ip(EIP),
                    seen,
                )
                .await;
                let state = lb2.state(ip(EIP)).await.expect("state");
                let Some(last) = state.record.clone() else {
                    panic!("round {round}: no record after {results:?}");
                };
                assert_eq!(last.epoch, round, "round {round}");
                let i = records
                    .iter()
                    .position(|r| *r == last)
                    .expect("one of ours");
                assert!(
                    results[i].is_ok(),
                    "round {round}: the record names {} but its claim failed: {results:?}",
                    last.holder
                );
                for r in results.iter().filter_map(|r| r.as_ref().err()) {
                    assert_eq!(r.kind(), "conflict", "round {round}: {r}");
                }
                assert!(state.holders.contains(&last.holder), "round {round}");
                assert_eq!(eip(&sim).await["labels"]["k"], "v", "round {round}");
                seen = Some(round);
            }
        })
        .await;
    }

    #[tokio::test]
    async fn the_simulator_updates_labels_as_the_api_does() {
        bounded(async {
            // Long enough that the read right after the update comes before it applies.
            let sim = start(Faults {
                op_delay: Duration::from_secs(1),
                ..Faults::default()
            })
            .await;
            let api = Api::new(&sim);
            let target = format!("/v2/elastic-ip/{EIP_ID}");
            let reply = api
                .put(
                    &target,
                    r#"{"labels": {"k": "v", "exoip-epoch": "4", "exoip-holder": "not an id"}}"#,
                )
                .await;
            assert_eq!(reply.status, 200, "{}", reply.json);
            assert_eq!(reply.json["state"], "pending");
            assert_eq!(reply.json["reference"]["id"], EIP_ID);
            // Applied when the operation completes, not before.
            assert_eq!(eip(&sim).await["labels"], json!({"k": "v"}));
            let op = reply.json["id"].as_str().unwrap().to_string();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            loop {
                let polled = api.get(&format!("/v2/operation/{op}")).await;
                if polled.json["state"] == "success" {
                    break;
                }
                assert!(tokio::time::Instant::now() < deadline, "{}", polled.json);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let json = eip(&sim).await;
            assert_eq!(json["labels"]["exoip-epoch"], "4");
            assert_eq!(json["description"], "exoip test");
            // "not an id" is no instance id: no record, no claim event.
            assert!(claims(&sim.timeline(), ip(EIP)).is_empty());

            // The body as the spec has it, nothing else.
            for bad in [
                r#"{"labels": {"a": 1}}"#,
                r#"{"labels": ["a"]}"#,
                r#"{"description": 7}"#,
                r#"{"healthcheck": {"mode": "tcp", "port": 80}}"#,
                r#"{"instance": {"id": "2f6a9a43-0000-4000-8000-000000000011"}}"#,
                "not json",
            ] {
                let reply = api.put(&target, bad).await;
                assert_eq!(reply.status, 400, "{bad}: {}", reply.json);
                assert!(reply.json["errors"]
                    .as_array()
                    .is_some_and(|e| !e.is_empty()));
            }
            let long = json!({ "description": "x".repeat(256) }).to_string();
            assert_eq!(api.put(&target, &long).await.status, 400);
            let unknown = "/v2/elastic-ip/8ea5e5c4-0000-4000-8000-0000000000ff";
            assert_eq!(api.put(unknown, r#"{"labels": {}}"#).await.status, 404);
            // Signed like every call: a tampered body is refused.
            let body = r#"{"labels": {}}"#;
            let rb = api
                .request("PUT", &target, body, common::now_unix() + 600)
                .body(r#"{"labels": {"evil": "1"}}"#);
            assert_eq!(Api::send(rb).await.status, 403);
            assert_eq!(eip(&sim).await["labels"]["exoip-epoch"], "4");
        })
        .await;
    }
}

// ---------------------------------------------------------------------------------------------
// OpenStack: a token in the floating IP's description, in the fenced PUT that moves it

mod openstack {
    use super::*;
    use exoip_providers::openstack::{
        Credentials, Domain, OpenStack, OpenStackMode, OpenStackSettings, Project, User,
    };
    use exoip_providers::sim::{LabSeed, OpenStackSeed};
    use exoip_providers::Secret;
    use serde_json::Value;

    const PASSWORD: &str = "arbiter-password-0123";
    const LB1: &str = "2f6a9a43-0000-4000-8000-000000000011";
    const LB2: &str = "2f6a9a43-0000-4000-8000-000000000012";
    const LB3: &str = "2f6a9a43-0000-4000-8000-000000000013";
    const FIP_ID: &str = "8ea5e5c4-0000-4000-8000-000000000010";
    const FIP: &str = "203.0.113.10";
    const VIP: &str = "192.0.2.100";
    /// The VIP's own port in `LabSeed` (no device, the VIP as its fixed IP).
    const VIP_PORT: &str = "d1e2f3a4-0000-4000-8000-000000000100";
    const USER_TEXT: &str = "web front end (prod)";

    /// Three servers, the floating IP on lb3 with some user text in its description.
    fn seed(description: &str) -> OpenStackSeed {
        let mut seed = LabSeed {
            password: PASSWORD.into(),
            fip_on: Some(2),
            ..LabSeed::default()
        }
        .build();
        assert_eq!(seed.floating_ips[0].id, FIP_ID);
        seed.floating_ips[0].description = description.into();
        seed.validate().expect("valid seed");
        seed
    }

    async fn start(seed: OpenStackSeed, faults: Faults) -> SimHandle {
        sim::start(SimConfig {
            faults,
            ..SimConfig::openstack(seed)
        })
        .await
        .expect("the simulator starts")
    }

    fn client(sim: &SimHandle, me: &str, mode: OpenStackMode) -> OpenStack {
        let mut s = OpenStackSettings::new(
            sim.api_url(),
            Credentials::Password {
                user: User::Name {
                    name: "demo".into(),
                    domain: Domain::Name("Default".into()),
                },
                password: Secret::new(PASSWORD),
                project: Project::Name {
                    name: "demo".into(),
                    domain: Domain::Id("default".into()),
                },
            },
        );
        s.server_id = Some(id(me));
        s.mode = mode;
        s.request_timeout = Duration::from_secs(2);
        s.retry = retry();
        OpenStack::new(s).expect("valid settings")
    }

    fn fip(sim: &SimHandle) -> Value {
        let state = sim.state();
        state["floating_ips"]
            .as_array()
            .and_then(|f| f.iter().find(|f| f["id"] == FIP_ID))
            .cloned()
            .unwrap_or_else(|| panic!("no floating IP in {state}"))
    }

    #[tokio::test]
    async fn a_claim_moves_the_address_and_records_itself_in_one_put() {
        bounded(async {
            let sim = start(seed(USER_TEXT), Faults::default()).await;
            let lb1 = client(&sim, LB1, OpenStackMode::FloatingIp);
            assert_eq!(lb1.arbiter(), Arbiter::CompareAndSwap);
            let before = lb1.state(ip(FIP)).await.expect("state");
            assert_eq!(before.holders, vec![id(LB3)]);
            assert_eq!(before.record, None);
            let revision = fip(&sim)["revision_number"].as_u64().unwrap();

            lb1.claim(ip(FIP), &record(1, LB1), None)
                .await
                .expect("claim");
            let after = lb1.state(ip(FIP)).await.expect("state");
            assert_eq!(after.holders, vec![id(LB1)]);
            assert_eq!(after.record, Some(record(1, LB1)));
            let shown = fip(&sim);
            assert_eq!(
                shown["description"],
                format!("{USER_TEXT} exoip:epoch=1,holder={LB1}"),
                "the user's text stays, the token follows it"
            );
            assert_eq!(shown["revision_number"], revision + 1, "one PUT");

            let lb2 = client(&sim, LB2, OpenStackMode::FloatingIp);
            lb2.claim(ip(FIP), &record(2, LB2), Some(1))
                .await
                .expect("second claim");
            let shown = fip(&sim);
            assert_eq!(
                shown["description"],
                format!("{USER_TEXT} exoip:epoch=2,holder={LB2}"),
                "the token is replaced, not repeated"
            );
            assert_eq!(shown["record"]["epoch"], 2);
            assert_eq!(lb1.state(ip(FIP)).await.unwrap().holders, vec![id(LB2)]);
            let events = sim.timeline();
            assert_eq!(
                claims(&events, ip(FIP)),
                vec![(1, LB1.to_string()), (2, LB2.to_string())]
            );
            // Each claim event follows the attach it came with and carries its holders.
            let last = events.last().unwrap();
            assert_eq!(last.event, HolderEvent::Claim);
            assert_eq!(last.holders, vec![id(LB2)]);
            assert_eq!(events[events.len() - 2].event, HolderEvent::Attach);

            // Detaching keeps the record: the next claim still builds on it.
            lb2.detach(ip(FIP), &id(LB2)).await.expect("detach");
            let released = lb1.state(ip(FIP)).await.unwrap();
            assert!(released.holders.is_empty());
            assert_eq!(released.record, Some(record(2, LB2)));
        })
        .await;
    }

    #[tokio::test]
    async fn a_claim_on_a_stale_read_is_a_conflict_without_a_put() {
        bounded(async {
            let sim = start(seed(""), Faults::default()).await;
            let lb1 = client(&sim, LB1, OpenStackMode::FloatingIp);
            lb1.claim(ip(FIP), &record(4, LB1), None)
                .await
                .expect("claim");
            assert_eq!(
                fip(&sim)["description"],
                format!("exoip:epoch=4,holder={LB1}")
            );
            let revision = fip(&sim)["revision_number"].clone();
            let events = sim.timeline().len();
            let lb2 = client(&sim, LB2, OpenStackMode::FloatingIp);
            for seen in [None, Some(3)] {
                let e = kind(
                    lb2.claim(ip(FIP), &record(5, LB2), seen).await,
                    "conflict",
                    "stale seen",
                );
                assert!(e.to_string().contains("epoch 4"), "{e}");
            }
            assert_eq!(fip(&sim)["revision_number"], revision, "no PUT was made");
            assert_eq!(sim.timeline().len(), events);
            let state = lb2.state(ip(FIP)).await.unwrap();
            assert_eq!(state.holders, vec![id(LB1)]);
            assert_eq!(state.record, Some(record(4, LB1)));
        })
        .await;
    }

    #[tokio::test]
    async fn of_two_concurrent_claims_exactly_one_wins() {
        bounded(async {
            // Neutron takes a while to answer a write: both claims read the same revision.
            let sim = start(
                seed(USER_TEXT),
                Faults {
                    op_delay: Duration::from_millis(100),
                    ..Faults::default()
                },
            )
            .await;
            let lb1 = Arc::new(client(&sim, LB1, OpenStackMode::FloatingIp));
            let lb2 = Arc::new(client(&sim, LB2, OpenStackMode::FloatingIp));
            let mut seen = None;
            for round in 1..=3u64 {
                let records = [record(round, LB1), record(round, LB2)];
                let results = race(
                    vec![
                        (lb1.clone(), records[0].clone()),
                        (lb2.clone(), records[1].clone()),
                    ],
                    ip(FIP),
                    seen,
                )
                .await;
                let state = lb1.state(ip(FIP)).await.expect("state");
                assert_one_winner(&results, &records, &state, &format!("round {round}"));
                let text = fip(&sim)["description"].as_str().unwrap().to_string();
                assert!(text.starts_with(USER_TEXT), "{text}");
                assert_eq!(text.matches("exoip:").count(), 1, "{text}");
                seen = Some(round);
            }
        })
        .await;
    }

    #[tokio::test]
    async fn a_description_with_no_room_for_the_record_is_invalid() {
        bounded(async {
            let long = "d".repeat(240);
            let sim = start(seed(&long), Faults::default()).await;
            let lb1 = client(&sim, LB1, OpenStackMode::FloatingIp);
            let e = kind(
                lb1.claim(ip(FIP), &record(1, LB1), None).await,
                "invalid",
                "no room",
            );
            assert!(e.to_string().contains(FIP_ID), "{e}");
            assert!(e.to_string().contains("255"), "{e}");
            let state = lb1.state(ip(FIP)).await.unwrap();
            assert_eq!(state.holders, vec![id(LB3)]);
            assert_eq!(state.record, None);
            assert_eq!(fip(&sim)["description"], long.as_str());
        })
        .await;
    }

    /// The VIP port of `LabSeed` as `/_sim/state` shows it.
    fn vip_port(sim: &SimHandle) -> Value {
        let state = sim.state();
        state["ports"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["id"] == VIP_PORT))
            .cloned()
            .unwrap_or_else(|| panic!("no VIP port in {state}"))
    }

    #[tokio::test]
    async fn vip_claims_are_recorded_on_the_vip_port() {
        bounded(async {
            let sim = start(seed(""), Faults::default()).await;
            let lb1 = client(&sim, LB1, OpenStackMode::Vip);
            assert_eq!(lb1.arbiter(), Arbiter::CompareAndSwap);
            let before = lb1.state(ip(VIP)).await.expect("state");
            assert_eq!(before.holders, vec![id(LB1), id(LB2), id(LB3)]);
            assert_eq!(before.record, None);
            let revision = vip_port(&sim)["revision_number"].as_u64().unwrap();

            lb1.claim(ip(VIP), &record(1, LB1), None)
                .await
                .expect("claim");
            let after = lb1.state(ip(VIP)).await.expect("state");
            // The list of allowed ports is a permission: every peer stays on it.
            assert_eq!(after.holders, vec![id(LB1), id(LB2), id(LB3)]);
            assert_eq!(after.record, Some(record(1, LB1)));
            let shown = vip_port(&sim);
            assert_eq!(shown["description"], format!("exoip:epoch=1,holder={LB1}"));
            assert_eq!(shown["record"]["epoch"], 1);
            assert_eq!(shown["record"]["holder"], LB1);
            assert_eq!(shown["revision_number"], revision + 1, "one PUT");

            let lb2 = client(&sim, LB2, OpenStackMode::Vip);
            lb2.claim(ip(VIP), &record(2, LB2), Some(1))
                .await
                .expect("second claim");
            assert_eq!(
                vip_port(&sim)["description"],
                format!("exoip:epoch=2,holder={LB2}"),
                "the token is replaced, not repeated"
            );
            // A claim on a stale read changes nothing.
            let revision = vip_port(&sim)["revision_number"].clone();
            let events = sim.timeline().len();
            let lb3 = client(&sim, LB3, OpenStackMode::Vip);
            let e = kind(
                lb3.claim(ip(VIP), &record(3, LB3), Some(1)).await,
                "conflict",
                "stale seen",
            );
            assert!(e.to_string().contains("epoch 2"), "{e}");
            assert_eq!(vip_port(&sim)["revision_number"], revision);
            assert_eq!(sim.timeline().len(), events);
            assert_eq!(
                lb3.state(ip(VIP)).await.unwrap().record,
                Some(record(2, LB2))
            );
            let events = sim.timeline();
            assert_eq!(
                claims(&events, ip(VIP)),
                vec![(1, LB1.to_string()), (2, LB2.to_string())]
            );
            let last = events.last().unwrap();
            assert_eq!(last.event, HolderEvent::Claim);
            assert_eq!(last.eip_id, VIP_PORT);
            assert_eq!(last.holders, vec![id(LB1), id(LB2), id(LB3)]);
        })
        .await;
    }

    #[tokio::test]
    async fn of_two_concurrent_vip_claims_exactly_one_wins() {
        bounded(async {
            // Neutron takes a while to answer a write: both claims read the same revision.
            let sim = start(
                seed(""),
                Faults {
                    op_delay: Duration::from_millis(100),
                    ..Faults::default()
                },
            )
            .await;
            let lb1 = Arc::new(client(&sim, LB1, OpenStackMode::Vip));
            let lb2 = Arc::new(client(&sim, LB2, OpenStackMode::Vip));
            // Tokens and the VIP port found beforehand: a claim is one GET, then the PUT.
            for c in [&lb1, &lb2] {
                c.state(ip(VIP)).await.expect("state");
            }
            let mut seen = None;
            for round in 1..=3u64 {
                let records = [record(round, LB1), record(round, LB2)];
                let results = race(
                    vec![
                        (lb1.clone(), records[0].clone()),
                        (lb2.clone(), records[1].clone()),
                    ],
                    ip(VIP),
                    seen,
                )
                .await;
                let what = format!("round {round}");
                let won: Vec<usize> = (0..2).filter(|&i| results[i].is_ok()).collect();
                assert_eq!(won.len(), 1, "{what}: {results:?}");
                for r in results.iter().filter_map(|r| r.as_ref().err()) {
                    assert_eq!(r.kind(), "conflict", "{what}: {r}");
                }
                let state = lb1.state(ip(VIP)).await.expect("state");
                assert_eq!(state.record.as_ref(), Some(&records[won[0]]), "{what}");
                let text = vip_port(&sim)["description"].as_str().unwrap().to_string();
                assert_eq!(text.matches("exoip:").count(), 1, "{text}");
                seen = Some(round);
            }
            assert_eq!(claims(&sim.timeline(), ip(VIP)).len(), 3);
        })
        .await;
    }
}

// ---------------------------------------------------------------------------------------------
// Azure: tags on the public IP, or on the NIC that takes the secondary ipConfiguration

mod azure {
    use super::*;
    use exoip_providers::azure::{Azure, AzureCredentials, AzureMode, AzureSettings};
    use exoip_providers::sim::azure::{lab, AzureLabSeed};
    use exoip_providers::Secret;
    use serde_json::{json, Value};

    const SECRET: &str = "arbiter-azure-secret";
    const PIP: &str = "203.0.113.10";
    const VIP: &str = "192.0.2.100";

    /// Four VMs, the public IP and the `vip` ipConfiguration on lb1; the public IP carries a
    /// tag of its own.
    fn seed() -> exoip_providers::sim::AzureSeed {
        let mut seed = AzureLabSeed {
            hosts: 4,
            client_secret: Secret::new(SECRET),
            ..AzureLabSeed::default()
        }
        .build()
        .expect("valid seed");
        seed.public_ips[0].tags.insert("owner".into(), "ops".into());
        seed
    }

    async fn start(faults: Faults) -> SimHandle {
        sim::start(SimConfig {
            faults,
            ..SimConfig::azure(seed())
        })
        .await
        .expect("the simulator starts")
    }

    fn client(sim: &SimHandle, vm: &str, mode: AzureMode) -> Azure {
        let mut s = AzureSettings::new(AzureCredentials::ClientSecret {
            tenant_id: lab::TENANT_ID.into(),
            client_id: lab::CLIENT_ID.into(),
            client_secret: Secret::new(SECRET),
        });
        s.subscription = Some(lab::SUBSCRIPTION_ID.into());
        s.resource_group = Some(lab::RESOURCE_GROUP.into());
        s.vm_name = Some(vm.into());
        s.arm_endpoint = sim.api_url();
        s.authority_host = sim.api_url();
        s.mode = mode;
        s.request_timeout = Duration::from_secs(2);
        s.operation_timeout = Duration::from_secs(8);
        s.poll_first = Duration::from_millis(10);
        s.poll_max = Duration::from_millis(50);
        s.retry = retry();
        Azure::new(s).expect("valid settings")
    }

    fn state_of(sim: &SimHandle) -> Value {
        sim.state()
    }

    fn public_ip(sim: &SimHandle) -> Value {
        state_of(sim)["public_ips"][0].clone()
    }

    fn nic(sim: &SimHandle, i: usize) -> Value {
        let state = state_of(sim);
        state["nics"]
            .as_array()
            .and_then(|n| n.iter().find(|n| n["name"] == lab::nic_name(i)))
            .cloned()
            .unwrap_or_else(|| panic!("no NIC {i} in {state}"))
    }

    fn vm(i: usize) -> String {
        lab::vm_name(i)
    }

    #[tokio::test]
    async fn public_ip_claims_tag_the_public_ip_before_moving_it() {
        bounded(async {
            let sim = start(Faults::default()).await;
            let lb2 = client(&sim, &vm(1), AzureMode::PublicIp);
            assert_eq!(lb2.arbiter(), Arbiter::CompareAndSwap);
            let before = lb2.state(ip(PIP)).await.expect("state");
            assert_eq!(before.holders, vec![id(&vm(0))]);
            assert_eq!(before.record, None);

            lb2.claim(ip(PIP), &record(1, &vm(1)), None)
                .await
                .expect("claim");
            let after = lb2.state(ip(PIP)).await.expect("state");
            assert_eq!(after.holders, vec![id(&vm(1))]);
            assert_eq!(after.record, Some(record(1, &vm(1))));
            assert_eq!(
                public_ip(&sim)["tags"],
                json!({"owner": "ops", "exoip-epoch": "1", "exoip-holder": vm(1)}),
                "other tags survive"
            );
            let lb3 = client(&sim, &vm(2), AzureMode::PublicIp);
            lb3.claim(ip(PIP), &record(2, &vm(2)), Some(1))
                .await
                .expect("second claim");
            let after = lb2.state(ip(PIP)).await.unwrap();
            assert_eq!(after.holders, vec![id(&vm(2))]);
            assert_eq!(after.record, Some(record(2, &vm(2))));
            assert_eq!(
                claims(&sim.timeline(), ip(PIP)),
                vec![(1, vm(1)), (2, vm(2))]
            );
            let addresses = state_of(&sim)["addresses"].clone();
            let shown = addresses
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["ip"] == PIP)
                .cloned()
                .unwrap();
            assert_eq!(shown["record"], json!({"epoch": 2, "holder": vm(2)}));
        })
        .await;
    }

    #[tokio::test]
    async fn a_public_ip_claim_on_a_stale_read_changes_nothing() {
        bounded(async {
            let sim = start(Faults::default()).await;
            let lb2 = client(&sim, &vm(1), AzureMode::PublicIp);
            lb2.claim(ip(PIP), &record(3, &vm(1)), None)
                .await
                .expect("claim");
            let etag = public_ip(&sim)["etag"].clone();
            let nics: Vec<Value> = (0..4).map(|i| nic(&sim, i)["etag"].clone()).collect();
            let lb3 = client(&sim, &vm(2), AzureMode::PublicIp);
            for seen in [None, Some(2)] {
                kind(
                    lb3.claim(ip(PIP), &record(4, &vm(2)), seen).await,
                    "conflict",
                    "stale seen",
                );
            }
            assert_eq!(
                public_ip(&sim)["etag"],
                etag,
                "the public IP was not written"
            );
            let after: Vec<Value> = (0..4).map(|i| nic(&sim, i)["etag"].clone()).collect();
            assert_eq!(after, nics, "no NIC was written");
            let state = lb3.state(ip(PIP)).await.unwrap();
            assert_eq!(state.holders, vec![id(&vm(1))]);
            assert_eq!(state.record, Some(record(3, &vm(1))));
        })
        .await;
    }

    #[tokio::test]
    async fn of_two_concurrent_public_ip_claims_exactly_one_wins() {
        bounded(async {
            let sim = start(Faults {
                op_delay: Duration::from_millis(50),
                latency: Duration::from_millis(20),
                ..Faults::default()
            })
            .await;
            let lb2 = Arc::new(client(&sim, &vm(1), AzureMode::PublicIp));
            let lb3 = Arc::new(client(&sim, &vm(2), AzureMode::PublicIp));
            let mut seen = None;
            for round in 1..=2u64 {
                let records = [record(round, &vm(1)), record(round, &vm(2))];
                let results = race(
                    vec![
                        (lb2.clone(), records[0].clone()),
                        (lb3.clone(), records[1].clone()),
                    ],
                    ip(PIP),
                    seen,
                )
                .await;
                let state = lb2.state(ip(PIP)).await.expect("state");
                assert_one_winner(&results, &records, &state, &format!("round {round}"));
                assert_eq!(public_ip(&sim)["tags"]["owner"], "ops");
                seen = Some(round);
            }
        })
        .await;
    }

    #[tokio::test]
    async fn secondary_ip_claims_tag_the_nic_that_takes_the_address() {
        bounded(async {
            let sim = start(Faults::default()).await;
            let (epoch_tag, holder_tag) = ("exoip-epoch-192.0.2.100", "exoip-holder-192.0.2.100");
            let lb2 = client(&sim, &vm(1), AzureMode::SecondaryIp);
            assert_eq!(lb2.arbiter(), Arbiter::CompareAndSwap);
            let before = lb2.state(ip(VIP)).await.expect("state");
            assert_eq!(before.holders, vec![id(&vm(0))]);
            assert_eq!(before.record, None);

            lb2.claim(ip(VIP), &record(1, &vm(1)), None)
                .await
                .expect("claim");
            let after = lb2.state(ip(VIP)).await.expect("state");
            assert_eq!(after.holders, vec![id(&vm(1))]);
            assert_eq!(after.record, Some(record(1, &vm(1))));
            assert_eq!(
                nic(&sim, 1)["tags"],
                json!({"exoip-group": "lab", epoch_tag: "1", holder_tag: vm(1)}),
                "other tags survive"
            );

            // A stale read: nothing changes (no NIC is written).
            let etags: Vec<Value> = (0..4).map(|i| nic(&sim, i)["etag"].clone()).collect();
            let lb3 = client(&sim, &vm(2), AzureMode::SecondaryIp);
            kind(
                lb3.claim(ip(VIP), &record(2, &vm(2)), None).await,
                "conflict",
                "stale seen",
            );
            let now: Vec<Value> = (0..4).map(|i| nic(&sim, i)["etag"].clone()).collect();
            assert_eq!(now, etags);

            lb3.claim(ip(VIP), &record(2, &vm(2)), Some(1))
                .await
                .expect("second claim");
            let state = lb2.state(ip(VIP)).await.unwrap();
            assert_eq!(state.holders, vec![id(&vm(2))]);
            assert_eq!(
                state.record,
                Some(record(2, &vm(2))),
                "lb2's NIC keeps its stale tags, which are ignored"
            );
            assert_eq!(nic(&sim, 1)["tags"][epoch_tag], "1");
            // Re-claiming what we hold only writes the record.
            lb3.claim(ip(VIP), &record(3, &vm(2)), Some(2))
                .await
                .expect("re-claim");
            assert_eq!(
                lb2.state(ip(VIP)).await.unwrap().record,
                Some(record(3, &vm(2)))
            );
            // Released, the address keeps its newest record.
            lb3.detach(ip(VIP), &id(&vm(2))).await.expect("detach");
            let released = lb2.state(ip(VIP)).await.unwrap();
            assert!(released.holders.is_empty());
            assert_eq!(released.record, Some(record(3, &vm(2))));
            lb2.claim(ip(VIP), &record(4, &vm(1)), Some(3))
                .await
                .expect("claim after the release");
            assert_eq!(
                lb2.state(ip(VIP)).await.unwrap().record,
                Some(record(4, &vm(1)))
            );
            assert_eq!(
                claims(&sim.timeline(), ip(VIP)),
                vec![(1, vm(1)), (2, vm(2)), (3, vm(2)), (4, vm(1))]
            );
        })
        .await;
    }

    #[tokio::test]
    async fn of_two_concurrent_secondary_ip_claims_exactly_one_wins() {
        bounded(async {
            let sim = start(Faults {
                op_delay: Duration::from_millis(50),
                latency: Duration::from_millis(20),
                ..Faults::default()
            })
            .await;
            let lb2 = Arc::new(client(&sim, &vm(1), AzureMode::SecondaryIp));
            let lb3 = Arc::new(client(&sim, &vm(2), AzureMode::SecondaryIp));
            let mut seen = None;
            for round in 1..=2u64 {
                let records = [record(round, &vm(1)), record(round, &vm(2))];
                let results = race(
                    vec![
                        (lb2.clone(), records[0].clone()),
                        (lb3.clone(), records[1].clone()),
                    ],
                    ip(VIP),
                    seen,
                )
                .await;
                let state = lb2.state(ip(VIP)).await.expect("state");
                assert_one_winner(&results, &records, &state, &format!("round {round}"));
                seen = Some(round);
            }
        })
        .await;
    }

    #[tokio::test]
    async fn lb_probe_claims_tag_the_claimants_own_nic() {
        bounded(async {
            let sim = start(Faults::default()).await;
            // The load balancer's frontend address, on no NIC.
            let frontend = ip("203.0.113.20");
            let (epoch_tag, holder_tag) = ("exoip-epoch-203.0.113.20", "exoip-holder-203.0.113.20");
            let lb2 = client(&sim, &vm(1), AzureMode::LbProbe);
            assert_eq!(lb2.arbiter(), Arbiter::WriteThenVerify);
            assert_eq!(
                lb2.state(frontend).await.expect("state"),
                AddressState::default()
            );

            lb2.claim(frontend, &record(1, &vm(1)), None)
                .await
                .expect("claim");
            let state = lb2.state(frontend).await.expect("state");
            assert_eq!(state.record, Some(record(1, &vm(1))));
            assert_eq!(state.holders, vec![id(&vm(1))], "the claimant");
            assert_eq!(
                nic(&sim, 1)["tags"],
                json!({"exoip-group": "lab", epoch_tag: "1", holder_tag: vm(1)}),
                "other tags survive"
            );
            let lb3 = client(&sim, &vm(2), AzureMode::LbProbe);
            let etags: Vec<Value> = (0..4).map(|i| nic(&sim, i)["etag"].clone()).collect();
            kind(
                lb3.claim(frontend, &record(2, &vm(2)), None).await,
                "conflict",
                "stale seen",
            );
            let now: Vec<Value> = (0..4).map(|i| nic(&sim, i)["etag"].clone()).collect();
            assert_eq!(now, etags, "no NIC was written");
            lb3.claim(frontend, &record(2, &vm(2)), Some(1))
                .await
                .expect("second claim");
            let state = lb2.state(frontend).await.expect("state");
            assert_eq!(state.record, Some(record(2, &vm(2))));
            assert_eq!(state.holders, vec![id(&vm(2))]);
            assert_eq!(
                nic(&sim, 1)["tags"][epoch_tag],
                "1",
                "the outdated record stays"
            );
            assert_eq!(
                claims(&sim.timeline(), frontend),
                vec![(1, vm(1)), (2, vm(2))]
            );
        })
        .await;
    }
}
