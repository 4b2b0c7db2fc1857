//! What the origin does after the commit and after a restart: keep relaying for the stub
//! (again after a restart), record the end of the moved process or its loss, follow it when it
//! moves on, and resolve the migrations a previous run left unfinished.

use std::time::{Duration, Instant};

use ferry_proto::v1::{MigrationRecord, MovedOn, MovedReply};
use tonic::Status;

use super::{abort_remote, commit_remote, peer_client};
use crate::migrate::state::{DestState, OriginState, Role, State, is_dest, is_origin};
use crate::migrate::{chain, start_time};
use crate::node::NodeRef;
use crate::relay::origin::Plan;

/// Whether `pid` is still the stub of a migration: the process that started at `start`, now
/// running `ferry-stub`.
pub(crate) fn is_stub(pid: i32, start: u64) -> bool {
    pid > 0
        && start_time(pid) == Some(start)
        && std::fs::read_link(format!("/proc/{pid}/exe"))
            .is_ok_and(|p| p.file_name().is_some_and(|n| n == "ferry-stub"))
}

/// How long the relay of a stub keeps trying to reach a destination that does not answer
/// before the process counts as lost: `FERRY_RELAY_GIVE_UP` seconds, default 3600 (how long
/// a client may be away: the destination keeps a copy frozen for its client as long).
fn relay_give_up() -> Duration {
    const DEFAULT: u64 = crate::relay::GIVE_UP_DEFAULT;
    let secs = match std::env::var("FERRY_RELAY_GIVE_UP") {
        Ok(v) => v.trim().parse::<u64>().unwrap_or_else(|_| {
            tracing::warn!(value = %v, "FERRY_RELAY_GIVE_UP is not a number of seconds; using {DEFAULT}");
            DEFAULT
        }),
        Err(_) => DEFAULT,
    };
    Duration::from_secs(secs)
}

/// Runs the relay of migration `id` (stub `stub_pid`, destination `to`) until it ends for
/// good: the remote process ended and the stub was told, or the stub died. While the stub
/// lives, a relay that broke (the stream, the link, the destination's agent) starts again,
/// with ferryd's duplicates of the stub's descriptors taken again from the stub. `first` is
/// the plan of the migration that just committed; after an agent restart it is `None`.
/// The process is lost when the destination answers that it holds no copy for the
/// migration, or does not answer for [`relay_give_up`]: then the stub is told (it exits with
/// `relay::LOST_EXIT_CODE`) and the record says `lost`. Then the relay's entry in the store
/// goes.
pub(crate) fn keep_relaying(
    node: NodeRef,
    first: Option<Plan>,
    stub_pid: i32,
    stub_start: u64,
    id: String,
    to: String,
) {
    let mut to = to;
    tokio::spawn(async move {
        let mut plan = first;
        let mut delay = Duration::from_millis(500);
        let mut attempt = 0u32;
        let give_up = relay_give_up();
        // Since when the destination did not answer (none of the attempts reached it).
        let mut unanswered: Option<Instant> = None;
        let mut lost: Option<String> = None;
        loop {
            let moved = node.relays.moved();
            if attempt > 0 {
                let relocated = moved.notified();
                if let Some(t) = unanswered
                    && t.elapsed() >= give_up
                    && !node.relays.relocation_pending(&id)
                {
                    lost = Some(format!(
                        "{to} did not answer for {} s",
                        t.elapsed().as_secs()
                    ));
                    break;
                }
                if !node.relays.relocation_pending(&id) {
                    // A failover elsewhere ends the wait.
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = relocated => {}
                    }
                }
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            attempt += 1;
            if let Some((r, notes)) = node.relays.take_relocation(&id) {
                failed_over(&node, &id, &to, &r, &notes);
                to = r.host;
                unanswered = None;
                delay = Duration::from_millis(500);
            }
            if !is_stub(stub_pid, stub_start) {
                tracing::info!(migration = %id, stub_pid, "the stub is gone: the relay ends");
                break;
            }
            let p = match plan.take() {
                Some(p) => p,
                None => {
                    let recorded = match node.store.relay(&id) {
                        Ok(Some(r)) => r,
                        Ok(None) => {
                            tracing::warn!(migration = %id, "no relay recorded for the stub");
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(migration = %id, error = %chain(&e), "read the relay record");
                            continue;
                        }
                    };
                    match Plan::reacquire(stub_pid, &recorded) {
                        Ok(p) => p,
                        Err(e) => {
                            tracing::warn!(migration = %id, error = %chain(&e), "take the stub's descriptors");
                            continue;
                        }
                    }
                }
            };
            let ch = match node.peers.channel(&to) {
                Ok(c) => c,
                Err(e) => {
                    tracing::info!(migration = %id, %to, error = %chain(&e), "no channel for the relay; retrying");
                    unanswered.get_or_insert_with(Instant::now);
                    continue;
                }
            };
            tracing::info!(migration = %id, stub_pid, attempt, %to, "relay starting");
            let relocated = moved.notified();
            let mut started =
                crate::relay::origin::start(node.clone(), p, stub_pid, id.clone(), ch);
            let result = tokio::select! {
                r = &mut started => r,
                () = relocated, if !node.relays.relocation_pending(&id) => {
                    // Still opening the stream to a host that died: go to the new one.
                    started.abort();
                    continue;
                }
            };
            match result {
                Ok(Ok(exit)) => {
                    record_ended(&node, &id, exit.as_ref());
                    break;
                }
                Ok(Err(crate::relay::RelayError::Rpc(s))) if s.code() == tonic::Code::NotFound => {
                    tracing::warn!(migration = %id, %to, error = %s.message(), "the destination has no relay for this migration any more");
                    lost = Some(format!(
                        "{to} holds no copy any more (its agent restarted, or the copy ended while it was down)"
                    ));
                    break;
                }
                Ok(Err(crate::relay::RelayError::Rpc(s))) => {
                    // The stream could not be opened: the destination did not answer.
                    tracing::warn!(migration = %id, %to, error = %s.message(), "relay not accepted; retrying");
                    unanswered.get_or_insert_with(Instant::now);
                }
                Ok(Err(e)) => {
                    tracing::warn!(migration = %id, error = %chain(&e), "relay broke; starting it again");
                    unanswered = None;
                    // The stream worked: the next one is tried soon (what it kept waits).
                    delay = Duration::from_millis(500);
                }
                Err(e) => {
                    tracing::warn!(migration = %id, error = %e, "relay task failed; starting it again");
                }
            }
        }
        if let Some(why) = lost {
            stub_lost(&node, stub_pid, stub_start, &id, &to, &why).await;
        }
        if let Err(e) = node.store.remove_relay(&id) {
            tracing::warn!(migration = %id, error = %chain(&e), "remove the relay record");
        }
    });
}

/// The copy of migration `id` was restored on `r.host` after `from` was lost (a failover):
/// the record and the managed job say where it runs now.
fn failed_over(
    node: &NodeRef,
    id: &str,
    from: &str,
    r: &crate::relay::failover::Relocation,
    notes: &str,
) {
    let detail = format!(
        "failover: {from} down; restored on {} as pid {} from checkpoint {} (epoch {}){}{notes}",
        r.host,
        r.pid,
        r.checkpoint.seq,
        r.epoch,
        if notes.is_empty() { "" } else { ": " }
    );
    tracing::warn!(migration = %id, %from, to = %r.host, pid = r.pid, %notes, "the copy was restored elsewhere: the relay goes there");
    match node.store.get(id) {
        Ok(Some(mut rec)) => {
            rec.peer = r.host.clone();
            rec.remote_pid = r.pid;
            rec.moved_to.clear();
            rec.moved_pid = 0;
            if let Err(e) = node.store.set_detail(&mut rec, detail) {
                tracing::warn!(migration = %id, error = %chain(&e), "record the failover");
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(migration = %id, error = %chain(&e), "read the record"),
    }
    for e in node.managed.list(0, true) {
        if e.migration_id == id {
            node.managed.update(&e.id, |x| {
                x.runs_on = r.host.clone();
                x.remote_pid = r.pid;
                x.epoch = r.epoch;
            });
        }
    }
}

/// The relay of migration `id` ended with the remote process: its record says so, with the
/// exit status.
fn record_ended(node: &NodeRef, id: &str, exit: Option<&ferry_proto::v1::ExitStatus>) {
    let mut rec = match node.store.get(id) {
        Ok(Some(r)) if is_origin(&r, OriginState::Done) => r,
        Ok(_) => return,
        Err(e) => {
            tracing::warn!(migration = %id, error = %chain(&e), "read the record");
            return;
        }
    };
    let where_ = if rec.moved_to.is_empty() {
        format!("on {} as pid {}", rec.peer, rec.remote_pid)
    } else {
        format!("on {} as pid {}", rec.moved_to, rec.moved_pid)
    };
    match node.store.ended(&mut rec, exit, &where_) {
        Ok(()) => tracing::info!(migration = %id, detail = %rec.detail, "migrated process ended"),
        Err(e) => tracing::warn!(migration = %id, error = %chain(&e), "record the end"),
    }
}

/// The process `pid` (started at `start`) just moved from here to `to` (as `remote_pid`, by
/// migration `by`). If it was itself the copy of an earlier migration to this host, that
/// record and the earlier migration's origin (told in the background, until it
/// acknowledges) say where it went.
pub(crate) fn moved_on(node: &NodeRef, pid: i32, start: u64, to: &str, remote_pid: i32, by: &str) {
    let records = match node.store.list() {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %chain(&e), "read the records");
            return;
        }
    };
    for mut rec in records
        .into_iter()
        .filter(|r| is_dest(r, DestState::Done) && r.pid == pid && r.start_time == start)
    {
        rec.moved_to = to.to_string();
        rec.moved_pid = remote_pid;
        let detail =
            format!("moved on to {to} as pid {remote_pid} (migration {by}); pid {pid} here relays");
        if let Err(e) = node.store.set_detail(&mut rec, detail) {
            tracing::warn!(migration = %rec.migration_id, error = %chain(&e), "record the move");
        }
        let note = MovedOn {
            migration_id: rec.migration_id.clone(),
            to: to.to_string(),
            pid: remote_pid,
            by_migration_id: by.to_string(),
        };
        let (node, origin) = (node.clone(), rec.peer.clone());
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(200);
            for _ in 0..20 {
                let r = match node.peers.channel(&origin) {
                    Ok(ch) => peer_client(ch)
                        .moved(note.clone())
                        .await
                        .map(|_| ())
                        .map_err(|s| s.message().to_string()),
                    Err(e) => Err(chain(&e)),
                };
                match r {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::info!(migration = %note.migration_id, %origin, error = %e, "the origin did not hear of the move; retrying")
                    }
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        });
    }
}

/// `Peer.Moved`: the copy of our migration on `peer` moved on to another host. The record
/// says where; if this host's process was itself a copy, its origin hears it too.
pub async fn moved(node: &NodeRef, peer: &str, req: MovedOn) -> Result<MovedReply, Status> {
    let id = &req.migration_id;
    let bad = req.to.is_empty()
        || req.to.len() > 253
        || req.to.chars().any(|c| c.is_control() || c.is_whitespace());
    if bad {
        return Err(Status::invalid_argument(format!(
            "bad host name {:?}",
            req.to
        )));
    }
    let store_err = |e: crate::migrate::records::RecordsError| {
        Status::internal(format!("migration records: {}", chain(&e)))
    };
    let mut rec = node
        .store
        .get(id)
        .map_err(store_err)?
        .ok_or_else(|| Status::not_found(format!("no migration {id}")))?;
    if Role::of(&rec) != Role::Origin || rec.peer != peer {
        return Err(Status::permission_denied(format!(
            "migration {id} is not one of ours to {peer}"
        )));
    }
    rec.moved_to = req.to.clone();
    rec.moved_pid = req.pid;
    let detail = if is_origin(&rec, OriginState::Done) {
        format!(
            "running on {} as pid {} (moved on from {peer}, its migration {}); relaying via {peer}",
            req.to, req.pid, req.by_migration_id
        )
    } else {
        rec.detail.clone()
    };
    node.store.set_detail(&mut rec, detail).map_err(store_err)?;
    tracing::info!(migration = %id, to = %req.to, pid = req.pid, "the process moved on");
    moved_on(
        node,
        rec.pid,
        rec.start_time,
        &req.to,
        req.pid,
        &req.by_migration_id,
    );
    Ok(MovedReply {})
}

/// `Peer.RelayMoved` on the home: `peer` restored the copy of our migration after its host
/// was lost. Accepted only for a migration this host relays (its record `done`), from a
/// member of the replica group its newest checkpoint notice named, at a higher epoch, while
/// the host the relay goes to now is not `alive` in this host's view. The relay's next
/// stream goes to `peer` ([`crate::relay::failover`]).
pub async fn relay_moved(
    node: &NodeRef,
    peer: &str,
    req: ferry_proto::v1::RelayMovedRequest,
) -> Result<ferry_proto::v1::RelayMovedReply, Status> {
    let id = &req.migration_id;
    let store_err = |e: crate::migrate::records::RecordsError| {
        Status::internal(format!("migration records: {}", chain(&e)))
    };
    let rec = node
        .store
        .get(id)
        .map_err(store_err)?
        .ok_or_else(|| Status::not_found(format!("no migration {id}")))?;
    if !is_origin(&rec, OriginState::Done) {
        return Err(Status::failed_precondition(format!(
            "migration {id} is not one this host relays"
        )));
    }
    let ckpt = req
        .checkpoint
        .clone()
        .ok_or_else(|| Status::invalid_argument("no checkpoint"))?;
    if rec.peer == peer && rec.remote_pid == req.pid {
        // Heard already (a retry).
        return Ok(ferry_proto::v1::RelayMovedReply {});
    }
    let known = node.relays.last_checkpoint(id);
    let Some(known) = known.filter(|c| c.group.iter().any(|m| m == peer)) else {
        return Err(Status::permission_denied(format!(
            "{peer} is not in the replica group of migration {id}"
        )));
    };
    if req.epoch <= known.epoch {
        return Err(Status::failed_precondition(format!(
            "epoch {} is not above {}",
            req.epoch, known.epoch
        )));
    }
    let view = node.cluster.view();
    let alive = view
        .members
        .iter()
        .any(|m| m.name == rec.peer && m.state == crate::cluster::State::Alive);
    if alive {
        return Err(Status::failed_precondition(format!(
            "{} is alive here: not failing over yet",
            rec.peer
        )));
    }
    node.relays.relocate(
        id,
        crate::relay::failover::Relocation {
            host: peer.to_string(),
            pid: req.pid,
            epoch: req.epoch,
            checkpoint: ckpt,
        },
    );
    tracing::warn!(migration = %id, %peer, pid = req.pid, epoch = req.epoch, "the copy was restored after a failover");
    Ok(ferry_proto::v1::RelayMovedReply {})
}

/// The process of migration `id` is lost (`why`): its stub is told (it exits with
/// `relay::LOST_EXIT_CODE`), then the record says `lost`.
async fn stub_lost(node: &NodeRef, stub_pid: i32, stub_start: u64, id: &str, to: &str, why: &str) {
    let code = crate::relay::LOST_EXIT_CODE;
    tracing::warn!(migration = %id, stub_pid, reason = %why, "the migrated process is lost: ending its stub with exit code {code}");
    let told = crate::relay::origin::end_lost_stub(
        &node.relays,
        &node.config.socket,
        stub_pid,
        id,
        to,
        || is_stub(stub_pid, stub_start),
    )
    .await;
    let detail = match told {
        Ok(true) => format!("{why}; the stub (pid {stub_pid}) exited with code {code}"),
        Ok(false) => format!("{why}; the stub (pid {stub_pid}) was gone"),
        Err(e) => {
            tracing::warn!(migration = %id, error = %chain(&e), "tell the stub");
            format!("{why}; the stub (pid {stub_pid}) could not be told: {e}")
        }
    };
    match node.store.get(id) {
        Ok(Some(mut rec)) => {
            if let Err(e) = node.store.set(&mut rec, OriginState::Lost, detail) {
                tracing::warn!(migration = %id, error = %chain(&e), "record the loss");
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(migration = %id, error = %chain(&e), "read the record"),
    }
}

/// On start: serves again the stubs of migrations this agent committed whose relay had not
/// ended (the record is `done`, the relay is still recorded and the stub lives).
pub(crate) fn resume_relay(node: NodeRef, rec: &MigrationRecord) {
    crate::migrate::tree::resume_member_relays(&node, rec);
    match node.store.relay(&rec.migration_id) {
        Ok(Some(_)) if is_stub(rec.pid, rec.start_time) => {
            tracing::info!(migration = %rec.migration_id, stub_pid = rec.pid, "resuming the relay");
            keep_relaying(
                node.clone(),
                None,
                rec.pid,
                rec.start_time,
                rec.migration_id.clone(),
                rec.peer.clone(),
            );
        }
        Ok(Some(_)) => {
            let _ = node.store.remove_relay(&rec.migration_id);
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(migration = %rec.migration_id, error = %chain(&e), "read the relay record");
        }
    }
}

/// On start: resolves a migration this agent was the origin of (docs/migration.md, "Records").
pub(crate) async fn resolve_record(node: NodeRef, mut rec: MigrationRecord) {
    let id = rec.migration_id.clone();
    let to = rec.peer.clone();
    let stubbed = || is_stub(rec.pid, rec.start_time);
    let state = State::of(&rec);
    let remote_pid = rec.remote_pid;
    match state {
        Some(State::Origin(OriginState::Committing | OriginState::Committed))
            if !stubbed() && crate::migrate::lazy::is_lazy(&rec) =>
        {
            crate::migrate::lazy::resolve_origin(&node, rec).await;
        }
        // The execve happened (its `committing` may not have reached the disk: written
        // without waiting for it, after `frozen`, which was): commit.
        Some(State::Origin(
            OriginState::Frozen
            | OriginState::Prepared
            | OriginState::Committing
            | OriginState::Committed,
        )) if stubbed() => {
            crate::migrate::tree::end_unstubbed_members(&rec);
            let _ = node.store.set(
                &mut rec,
                OriginState::Committing,
                "the stub replaced the original before the agent stopped; committing",
            );
            let mut delay = Duration::from_millis(500);
            loop {
                let r = match node.peers.channel(&to) {
                    Ok(ch) => commit_remote(&node, &mut peer_client(ch), &id, &to).await,
                    Err(e) => {
                        tracing::info!(migration = %id, error = %chain(&e), "no channel; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(10));
                        continue;
                    }
                };
                let _ = match r {
                    Ok(()) => {
                        let set = node.store.set(
                            &mut rec,
                            OriginState::Done,
                            format!(
                                "committed after an agent restart; running on {to} as pid {}; \
                                 relaying",
                                remote_pid
                            ),
                        );
                        resume_relay(node.clone(), &rec);
                        set
                    }
                    Err(why) => node.store.set(&mut rec, OriginState::Aborted, why),
                };
                return;
            }
        }
        s if !s.is_some_and(State::is_final) => {
            let s = rec.state.clone();
            // Before the execve: the original was given back by the kernel when its tracer
            // died (PTRACE_SEIZE without EXITKILL), or never frozen.
            let _ = node.store.set(
                &mut rec,
                OriginState::Aborted,
                format!("the agent stopped at {s}; the original went on here"),
            );
            abort_remote(node.clone(), to, id);
        }
        _ => {}
    }
}
