//! `raftctl member list|add|promote|remove|replace` and `raftctl transfer-leader`: change the
//! members of a running cluster through its leader (`protocol.md` §7.6). Each change waits until
//! it is committed and applied (the joint phase over), then prints the configuration and what
//! changed; a refusal says why (a change in flight, a lagging learner, an unknown node).

use mini_raft::client::Client;
use mini_raft::raft::membership::{ChangeOp, MemberChange, MemberRole};
use mini_raft::wire::MembersReport;

use crate::{parse_command, parse_number, positional, CliError, Global};
use getopts::Matches;

/// `raftctl member ...`.
pub fn run(args: &[String], before: &Matches) -> Result<u8, CliError> {
    let (matches, global) = parse_command(args, before, |o| {
        o.optflag("", "learner", "member add: as a learner");
    })?;
    let Some((sub, free)) = matches.free.split_first() else {
        return Err(CliError::Usage("member needs list, add, promote, remove or replace".into()));
    };
    let id = |text: &str| -> Result<u64, CliError> {
        let id: u64 = parse_number(text, "node id")?;
        if id == 0 {
            return Err(CliError::Usage("node id 0 is reserved".into()));
        }
        Ok(id)
    };
    let change = |op, id, address: &str| MemberChange { op, id, address: address.to_string() };
    let changes = match sub.as_str() {
        "list" => {
            positional("member list", free, &[])?;
            let mut client = Client::new(global.cluster.clone(), global.client.clone())?;
            let report = client.member_list()?.value;
            print_report(&global, &report, None);
            return Ok(0);
        }
        "add" => {
            let free = positional("member add", free, &["ID", "ADDR"])?;
            let op = if matches.opt_present("learner") { ChangeOp::AddLearner } else { ChangeOp::AddVoter };
            vec![change(op, id(&free[0])?, &free[1])]
        }
        "promote" => {
            let free = positional("member promote", free, &["ID"])?;
            let id = id(&free[0])?;
            let mut client = Client::new(global.cluster.clone(), global.client.clone())?;
            let report = client.member_list()?.value;
            let role = report.members.iter().find(|m| m.node_id == id).map(|m| m.role);
            if role != Some(MemberRole::Learner) {
                let is = role.map_or("not a member", |r| r.name());
                return Err(CliError::Failed(format!("node {id} is {is}: promote makes a learner a voter")));
            }
            vec![change(ChangeOp::AddVoter, id, "")]
        }
        "remove" => {
            let free = positional("member remove", free, &["ID"])?;
            vec![change(ChangeOp::Remove, id(&free[0])?, "")]
        }
        "replace" => {
            let free = positional("member replace", free, &["OLD", "NEW", "ADDR"])?;
            vec![change(ChangeOp::AddVoter, id(&free[1])?, &free[2]), change(ChangeOp::Remove, id(&free[0])?, "")]
        }
        other => return Err(CliError::Usage(format!("unknown member command '{other}'"))),
    };
    let described: Vec<String> = changes
        .iter()
        .map(|c| match c.op {
            ChangeOp::AddVoter if c.address.is_empty() => format!("promoted {}", c.id),
            ChangeOp::AddVoter => format!("added voter {} at {}", c.id, c.address),
            ChangeOp::AddLearner => format!("added learner {} at {}", c.id, c.address),
            ChangeOp::Remove => format!("removed {}", c.id),
        })
        .collect();
    let mut client = Client::new(global.cluster.clone(), global.client.clone())?;
    let report = client.member_change(changes)?.value;
    print_report(&global, &report, Some(&described.join(", ")));
    Ok(0)
}

/// `raftctl transfer-leader [ID]`.
pub fn transfer(args: &[String], before: &Matches) -> Result<u8, CliError> {
    let (matches, global) = parse_command(args, before, |_| {})?;
    let to: u64 = match matches.free.as_slice() {
        [] => 0,
        [id] => parse_number(id, "node id")?,
        _ => return Err(CliError::Usage("transfer-leader takes at most one node id".into())),
    };
    let mut client = Client::new(global.cluster.clone(), global.client.clone())?;
    let before_leader = client.member_list()?.value.leader_id;
    let report = client.transfer_leader(to)?.value;
    let what = format!("leader moved from {before_leader} to {}", report.leader_id);
    print_report(&global, &report, Some(&what));
    Ok(0)
}

fn role_name(role: MemberRole) -> &'static str {
    role.name()
}

fn print_report(global: &Global, report: &MembersReport, changed: Option<&str>) {
    if global.json {
        let members: Vec<String> = report
            .members
            .iter()
            .map(|m| {
                format!(
                    "{{\"id\":{},\"address\":{},\"role\":\"{}\",\"match\":{},\"lag\":{}}}",
                    m.node_id,
                    crate::json_string(m.address.as_bytes()),
                    role_name(m.role),
                    m.match_index,
                    report.last_index.saturating_sub(m.match_index)
                )
            })
            .collect();
        let changed = changed.map_or("null".to_string(), |c| crate::json_string(c.as_bytes()));
        println!(
            "{{\"leader\":{},\"conf_index\":{},\"joint\":{},\"changed\":{changed},\"members\":[{}]}}",
            report.leader_id,
            report.conf_index,
            report.joint,
            members.join(",")
        );
        return;
    }
    if let Some(changed) = changed {
        println!("{changed}");
    }
    let joint = if report.joint { " (joint)" } else { "" };
    println!("leader {} configuration at index {}{joint}", report.leader_id, report.conf_index);
    println!("{:<6} {:<24} {:<9} {:>10} {:>8}", "ID", "ADDRESS", "ROLE", "MATCH", "LAG");
    for m in &report.members {
        let lag = report.last_index.saturating_sub(m.match_index);
        println!("{:<6} {:<24} {:<9} {:>10} {:>8}", m.node_id, m.address, role_name(m.role), m.match_index, lag);
    }
}
