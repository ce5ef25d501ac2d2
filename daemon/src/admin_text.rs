//! The text of `lockmgr`, the admin command: aligned tables of domains and locks, the cluster's
//! status, events with their UTC times. (Here, not in the command's file: the man page generator
//! compiles that file on its own.)

use lockmgr_proto::{DomainStatus, Event, EventKind, LockStatus, Mode};

/// `lockmgr status --cluster`: every node's answer, or why it gave none.
#[cfg(feature = "dlm")]
pub fn render_cluster(report: &crate::cluster_status::ClusterReport) -> String {
    let answered = report.nodes.iter().filter(|n| n.answered).count();
    let mut out = format!(
        "lockmgrd on every node of the cluster, asked from node id {}{}: {answered} of {} node(s) answered\n",
        report.asked_from,
        match report.quorate {
            Some(true) => " (quorate)",
            Some(false) => " (NOT QUORATE: only this node's partition can answer)",
            None => "",
        },
        report.nodes.len()
    );
    for node in &report.nodes {
        out.push_str(&format!("\nnode '{}' (id {}): ", node.name, node.node_id));
        match (&node.status, &node.error) {
            (Some(status), _) => {
                out.push_str(&format!(
                    "{} domain(s), {} lock(s)\n",
                    status.owners.len(),
                    status.locks.len()
                ));
                out.push_str(&render_tables(
                    &status.owners,
                    &status.locks,
                    status.truncated.as_deref(),
                ));
            }
            (None, Some(error)) => out.push_str(&format!("{error}\n")),
            (None, None) => out.push_str("no answer\n"),
        }
    }
    out
}

/// A lock mode as the tables print it.
pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Exclusive => "exclusive",
        Mode::Shared => "shared",
    }
}

/// Left-aligned columns, two spaces apart.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut text = String::new();
        for (index, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if index + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        text.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

/// The DOMAIN and RESOURCE tables of one daemon's status.
pub fn render_tables(
    domains: &[DomainStatus],
    locks: &[LockStatus],
    truncated: Option<&str>,
) -> String {
    let mut out = String::new();
    if !domains.is_empty() {
        let rows: Vec<Vec<String>> = domains
            .iter()
            .map(|d| {
                let held = locks.iter().filter(|l| l.owners.contains(&d.name)).count();
                vec![
                    d.name.clone(),
                    d.uuid.clone(),
                    d.pid.to_string(),
                    held.to_string(),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(&["DOMAIN", "UUID", "PID", "LOCKS"], &rows));
    }
    if !locks.is_empty() {
        let rows: Vec<Vec<String>> = locks
            .iter()
            .map(|l| {
                vec![
                    l.resource.clone(),
                    mode_name(l.mode).to_owned(),
                    l.owners.join(", "),
                    l.since_ms.map_or_else(|| "-".to_owned(), utc),
                    l.target.clone(),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(
            &["RESOURCE", "MODE", "HELD BY", "SINCE (UTC)", "LOCK"],
            &rows,
        ));
    }
    if let Some(truncated) = truncated {
        out.push_str(&format!("\n({truncated})\n"));
    }
    out
}

/// `seconds since the epoch` as `YYYY-MM-DD HH:MM:SS.mmm` UTC.
pub fn utc(at_ms: u64) -> String {
    let (secs, millis) = (at_ms / 1000, at_ms % 1000);
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rest = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{millis:03}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// One event, on one line, with its UTC time and sequence number.
pub fn render_event(event: &Event) -> String {
    let what = match &event.what {
        EventKind::OwnerExited {
            uuid,
            freed,
            micros,
        } => format!("domain {uuid}: QEMU exited; {freed} lock(s) freed in {micros} µs"),
        EventKind::LockLost { domain, detail } => format!("LOCK LOST: domain '{domain}': {detail}"),
    };
    format!("{} UTC  #{}  {what}", utc(event.at_ms), event.seq)
}

#[cfg(test)]
mod tests {
    use super::{table, utc};

    #[test]
    fn timestamps_are_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00.000");
        assert_eq!(utc(1_796_194_801_123), "2026-12-02 07:00:01.123");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00.000");
    }

    #[test]
    fn tables_align_their_columns() {
        let text = table(
            &["DOMAIN", "PID"],
            &[
                vec!["vm-long-name".into(), "7".into()],
                vec!["a".into(), "1234".into()],
            ],
        );
        assert_eq!(
            text,
            "DOMAIN        PID\nvm-long-name  7\na             1234\n"
        );
    }
}
