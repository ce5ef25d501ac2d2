//! The scenarios: libvirt's own operations through virsh on two nodes, each ending with nothing
//! running. Each returns what it saw (`Ok`) or what broke (`Err`); times are printed, never
//! asserted.

use std::time::{Duration, Instant};

use crate::bed::{Bed, Disk, Domain, Virsh, names_holder};
use crate::{Check, Figures};

/// A start that must succeed.
fn started(node: usize, domain: &Domain<'_>, virsh: &Virsh) -> Result<(), String> {
    if virsh.ok {
        Ok(())
    } else {
        Err(format!(
            "virsh start {} on node{node} failed: {}",
            domain.name, virsh.text
        ))
    }
}

/// A start (or attach) that the lock manager must refuse, naming `holder` on `holder_node`;
/// returns the refusal's last line.
pub(crate) fn refused_naming(
    node: usize,
    domain: &Domain<'_>,
    virsh: &Virsh,
    holder: &str,
    holder_node: usize,
) -> Result<String, String> {
    if virsh.ok {
        return Err(format!(
            "{} on node{node} SUCCEEDED although {holder} holds its disk on node{holder_node}",
            domain.name
        ));
    }
    if names_holder(&virsh.text, node, holder, holder_node) {
        Ok(virsh.text.lines().last().unwrap_or_default().to_owned())
    } else {
        Err(format!(
            "the refusal of {} on node{node} does not name {holder} on node{holder_node}: {}",
            domain.name, virsh.text
        ))
    }
}

/// vm1 holds the LUN on node1; vm2 asking for it on node2 is refused with vm1 and node1 named;
/// once vm1 is destroyed vm2 starts.
pub(crate) fn exclusive_across_nodes(bed: &Bed, figures: &mut Figures) -> Check {
    let vm1 = Domain::new("excl1", &[Disk::Lun]);
    let vm2 = Domain::new("excl2", &[Disk::Lun]);
    let first = bed.start(1, &vm1);
    started(1, &vm1, &first)?;
    figures.push(("virsh start on node1 (nested TCG)", first.took));
    let second = bed.start(2, &vm2);
    let result = refused_naming(2, &vm2, &second, vm1.name, 1);
    figures.push(("refused virsh start on node2", second.took));
    let status = bed.status(1);
    bed.destroy(1, vm1.name);
    bed.destroy(2, vm2.name);
    let refusal = result?;
    let after = bed.start(2, &vm2);
    started(2, &vm2, &after).map_err(|e| format!("after excl1 was destroyed: {e}"))?;
    bed.destroy(2, vm2.name);
    Ok(format!(
        "refused: {refusal}\nlockmgr status on node1 while excl1 ran:\n{status}"
    ))
}

/// The same conflict through a `<lease>` (disks on node-local files, so only the lease is shared).
pub(crate) fn lease_across_nodes(bed: &Bed, _: &mut Figures) -> Check {
    let vm1 = Domain::new("lease1", &[Disk::File("lease1.img")]).with_lease("vmleases", "app");
    let vm2 = Domain::new("lease2", &[Disk::File("lease2.img")]).with_lease("vmleases", "app");
    started(1, &vm1, &bed.start(1, &vm1))?;
    let second = bed.start(2, &vm2);
    bed.destroy(1, vm1.name);
    bed.destroy(2, vm2.name);
    refused_naming(2, &vm2, &second, vm1.name, 1)
}

/// `<shareable/>` on both nodes runs; an exclusive user of the LUN is then refused on either
/// node; `<readonly/>` on both nodes runs beside them.
pub(crate) fn shareable_and_read_only(bed: &Bed, _: &mut Figures) -> Check {
    let shared1 = Domain::new("share1", &[Disk::LunShared]);
    let shared2 = Domain::new("share2", &[Disk::LunShared]);
    let exclusive = Domain::new("excl3", &[Disk::Lun]);
    let ro1 = Domain::new("ro1", &[Disk::LunReadOnly]);
    let ro2 = Domain::new("ro2", &[Disk::LunReadOnly]);
    let result = (|| {
        started(1, &shared1, &bed.start(1, &shared1))?;
        started(2, &shared2, &bed.start(2, &shared2))?;
        let refused = bed.start(1, &exclusive);
        if refused.ok {
            return Err(
                "an exclusive start of the LUN on node1 succeeded beside two shareable users"
                    .to_owned(),
            );
        }
        started(1, &ro1, &bed.start(1, &ro1))?;
        started(2, &ro2, &bed.start(2, &ro2))?;
        Ok(format!(
            "shareable on both nodes: running; exclusive refused: {}; read-only on both: running",
            refused.text.lines().last().unwrap_or_default()
        ))
    })();
    for (node, name) in [
        (1, "share1"),
        (2, "share2"),
        (1, "excl3"),
        (1, "ro1"),
        (2, "ro2"),
    ] {
        bed.destroy(node, name);
    }
    result
}

/// kill -9 of vm1's QEMU on node1 frees the LUN: vm2 then starts on node2.
pub(crate) fn qemu_kill_frees(bed: &Bed, figures: &mut Figures) -> Check {
    let vm1 = Domain::new("kill1", &[Disk::Lun]);
    let vm2 = Domain::new("kill2", &[Disk::Lun]);
    started(1, &vm1, &bed.start(1, &vm1))?;
    let pid = bed.qemu_pid(1, vm1.name);
    let killed = Instant::now();
    bed.must(1, &format!("kill -9 {pid}"));
    // The lock goes when QEMU's pid goes (lockmgrd watches it), whatever libvirtd does after.
    let mut tries = 0;
    let second = loop {
        tries += 1;
        let attempt = bed.start(2, &vm2);
        if attempt.ok || tries == 5 {
            break attempt;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    figures.push(("QEMU kill -9 → start on node2", killed.elapsed()));
    bed.destroy(2, vm2.name);
    bed.destroy(1, vm1.name);
    started(2, &vm2, &second).map(|()| format!("node2 started kill2 after {tries} attempt(s)"))
}

/// virsh suspend releases vm1's lock (libvirt's pause), so vm2 may start on node2; vm1's resume
/// is then refused; once vm2 is gone, vm1 resumes.
pub(crate) fn suspend_resume(bed: &Bed, _: &mut Figures) -> Check {
    let vm1 = Domain::new("pause1", &[Disk::Lun]);
    let vm2 = Domain::new("pause2", &[Disk::Lun]);
    let result = (|| {
        started(1, &vm1, &bed.start(1, &vm1))?;
        let suspended = bed.virsh(1, &format!("suspend {}", vm1.name));
        if !suspended.ok {
            return Err(format!("suspend: {}", suspended.text));
        }
        started(2, &vm2, &bed.start(2, &vm2))
            .map_err(|e| format!("after pause1 was suspended: {e}"))?;
        let resumed = bed.virsh(1, &format!("resume {}", vm1.name));
        if resumed.ok {
            return Err("pause1 resumed on node1 while pause2 holds the LUN on node2".to_owned());
        }
        bed.destroy(2, vm2.name);
        let resumed = bed.virsh(1, &format!("resume {}", vm1.name));
        if !resumed.ok {
            return Err(format!(
                "resume after pause2 was destroyed: {}",
                resumed.text
            ));
        }
        Ok(
            "suspend freed the LUN, the resume was refused while node2 held it, then resumed"
                .to_owned(),
        )
    })();
    bed.destroy(1, vm1.name);
    bed.destroy(2, vm2.name);
    result
}

/// Hotplug: node1's domain attaches the LUN (SCSI); node2's attach of it is refused; after the
/// unplug on node1, node2's attach succeeds.
pub(crate) fn hotplug(bed: &Bed, _: &mut Figures) -> Check {
    let vm1 = Domain::new("plug1", &[Disk::File("plug1.img")]);
    let vm2 = Domain::new("plug2", &[Disk::File("plug2.img")]);
    let lun = crate::bed::disk_xml(Disk::Lun, "sdb");
    let attach = |node: usize, name: &str| {
        bed.must(node, &format!("cat > /tmp/lun.xml <<'EOF'\n{lun}EOF"));
        bed.virsh(node, &format!("attach-device {name} /tmp/lun.xml --live"))
    };
    let result = (|| {
        started(1, &vm1, &bed.start(1, &vm1))?;
        started(2, &vm2, &bed.start(2, &vm2))?;
        let first = attach(1, vm1.name);
        if !first.ok {
            return Err(format!("attach to plug1 on node1: {}", first.text));
        }
        let refused = attach(2, vm2.name);
        let refusal = refused_naming(2, &vm2, &refused, vm1.name, 1)?;
        let detached = bed.virsh(
            1,
            &format!("detach-device {} /tmp/lun.xml --live", vm1.name),
        );
        if !detached.ok {
            return Err(format!("detach from plug1: {}", detached.text));
        }
        let mut tries = 0;
        let again = loop {
            tries += 1;
            let again = attach(2, vm2.name);
            if again.ok || tries == 10 {
                break again;
            }
            std::thread::sleep(Duration::from_secs(1));
        };
        if !again.ok {
            return Err(format!(
                "attach on node2 after node1's unplug: {}",
                again.text
            ));
        }
        Ok(format!(
            "refused: {refusal}; after the unplug node2 attached it"
        ))
    })();
    bed.destroy(1, vm1.name);
    bed.destroy(2, vm2.name);
    result
}

/// A libvirtd restart on node1 (domains keep running) keeps vm1's lock.
pub(crate) fn libvirtd_restart_keeps_lock(bed: &Bed, _: &mut Figures) -> Check {
    let vm1 = Domain::new("lvd1", &[Disk::Lun]);
    let vm2 = Domain::new("lvd2", &[Disk::Lun]);
    started(1, &vm1, &bed.start(1, &vm1))?;
    bed.stop_libvirtd(1);
    let while_down = bed.start(2, &vm2);
    bed.start_libvirtd(1);
    let after = bed.start(2, &vm2);
    let running = bed.state(1, vm1.name);
    bed.destroy(1, vm1.name);
    bed.destroy(2, vm2.name);
    let down = refused_naming(2, &vm2, &while_down, vm1.name, 1)
        .map_err(|e| format!("while libvirtd was down on node1: {e}"))?;
    refused_naming(2, &vm2, &after, vm1.name, 1)
        .map_err(|e| format!("after libvirtd restarted on node1: {e}"))?;
    if running != "running" {
        return Err(format!("lvd1 is '{running}' after the libvirtd restart"));
    }
    Ok(format!(
        "refused while libvirtd was down ({down}) and after its restart"
    ))
}

/// lockmgrd SIGKILLed on node1 with a domain running: the DLM keeps the lock as an orphan, so
/// node2 is refused while the daemon is down; the restarted daemon adopts it (status shows it),
/// and it is freed when the domain goes.
pub(crate) fn daemon_crash_keeps_lock(bed: &Bed, figures: &mut Figures) -> Check {
    let vm1 = Domain::new("orph1", &[Disk::Lun]);
    let vm2 = Domain::new("orph2", &[Disk::Lun]);
    started(1, &vm1, &bed.start(1, &vm1))?;
    bed.crash_daemon(1);
    let while_down = bed.start(2, &vm2);
    let restart = Instant::now();
    bed.start_daemon(1);
    figures.push(("lockmgrd restart (adoption) on node1", restart.elapsed()));
    let status = bed.status(1);
    let after = bed.start(2, &vm2);
    bed.destroy(1, vm1.name);
    let mut tries = 0;
    let freed = loop {
        tries += 1;
        let attempt = bed.start(2, &vm2);
        if attempt.ok || tries == 5 {
            break attempt;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    bed.destroy(2, vm2.name);
    if while_down.ok {
        return Err(
            "orph2 started on node2 while node1's lockmgrd was down and orph1 ran".to_owned(),
        );
    }
    refused_naming(2, &vm2, &after, vm1.name, 1)
        .map_err(|e| format!("after node1's lockmgrd restarted: {e}"))?;
    if !status.contains(vm1.name) {
        return Err(format!(
            "the restarted lockmgrd's status does not show orph1:\n{status}"
        ));
    }
    started(2, &vm2, &freed).map_err(|e| format!("after orph1 was destroyed: {e}"))?;
    Ok(format!(
        "orphan kept and adopted; status after the restart:\n{status}"
    ))
}

/// `lockmgr status --cluster` on node2 shows both nodes' domains and locks (asked through
/// corosync's lockmgrd process group); with node1's lockmgrd down it names node1 as not
/// answering, and sees it again once it is back.
pub(crate) fn cluster_wide_status(bed: &Bed, _: &mut Figures) -> Check {
    let vm1 = Domain::new("stat1", &[Disk::Lun]);
    let vm2 = Domain::new("stat2", &[Disk::File("stat2.img")]);
    let result = (|| {
        started(1, &vm1, &bed.start(1, &vm1))?;
        started(2, &vm2, &bed.start(2, &vm2))?;
        let (ok, json) = bed.sh(2, "lockmgr status --cluster --json");
        if !ok {
            return Err(format!("lockmgr status --cluster failed on node2: {json}"));
        }
        let report: serde_json::Value =
            serde_json::from_str(&json).map_err(|e| format!("not JSON ({e}): {json}"))?;
        let holds = |node: u64, domain: &str, resource: &str| {
            report["nodes"].as_array().is_some_and(|nodes| {
                nodes.iter().any(|n| {
                    n["node_id"] == node
                        && n["answered"] == true
                        && n["owners"]
                            .as_array()
                            .is_some_and(|o| o.iter().any(|d| d["name"] == domain))
                        && n["locks"].as_array().is_some_and(|locks| {
                            locks.iter().any(|l| {
                                l["resource"]
                                    .as_str()
                                    .is_some_and(|r| r.ends_with(resource))
                                    && l["owners"]
                                        .as_array()
                                        .is_some_and(|o| o.iter().any(|d| d == domain))
                            })
                        })
                })
            })
        };
        if !holds(1, vm1.name, crate::bed::LUN) || !holds(2, vm2.name, "stat2.img") {
            return Err(format!(
                "node2's cluster status does not show stat1 on node1 and stat2 on node2:\n{json}"
            ));
        }
        let table = bed.must(2, "lockmgr status --cluster");
        bed.crash_daemon(1);
        let (_, without) = bed.sh(2, "lockmgr status --cluster");
        bed.start_daemon(1);
        if !without.contains("node 'node1' (id 1): no answer") {
            return Err(format!(
                "with node1's lockmgrd down, node2's cluster status does not say node1 did not answer:\n{without}"
            ));
        }
        let (_, back) = bed.sh(2, "lockmgr status --cluster --json");
        let back: serde_json::Value = serde_json::from_str(&back).unwrap_or_default();
        let node1_back = back["nodes"].as_array().is_some_and(|nodes| {
            nodes.iter().any(|n| {
                n["node_id"] == 1
                    && n["owners"]
                        .as_array()
                        .is_some_and(|o| o.iter().any(|d| d["name"] == vm1.name))
            })
        });
        if !node1_back {
            return Err(format!(
                "node1's restarted lockmgrd is not in the cluster status:\n{back}"
            ));
        }
        Ok(format!(
            "lockmgr status --cluster on node2:\n{table}\nwith node1's lockmgrd down:\n{without}"
        ))
    })();
    bed.destroy(1, vm1.name);
    bed.destroy(2, vm2.name);
    result
}
