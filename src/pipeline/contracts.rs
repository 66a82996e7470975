//! Pass 7, contracts: takes the bound instances and holds each to its kind's input
//! contract ([`crate::stages::contract`]): declared names, required inputs bound, one
//! upstream result where the kind reads one, corpora and splits of the task the stage
//! needs; a kind whose params name some inputs keeps only those.

use std::collections::{BTreeMap, BTreeSet};

use super::error::PipelineError;
use super::instance::StageInstance;
use super::load::Context;
use super::locate::SourceMap;
use super::template::MergedStage;
use crate::data::schema::Task;
use crate::stages::contract::{self, ContractError, InputContract, TaskName};
use crate::stages::StageRegistry;

/// Checks every instance of `cx.instances` (and trims the inputs of kinds whose params
/// name them).
pub(super) fn check(cx: &mut Context) -> Result<(), PipelineError> {
    check_contracts(
        &mut cx.instances,
        &cx.stages,
        &cx.by_base,
        &cx.map,
        cx.registry,
    )
}

/// Every instance's inputs against its kind's contract ([`crate::stages::contract`]):
/// declared names, required inputs bound, one upstream result where the kind reads one, and
/// corpora and splits of the task the stage needs. Instances come in expansion order, so
/// an instance's inputs have their tasks worked out before it.
fn check_contracts(
    instances: &mut [StageInstance],
    merged: &BTreeMap<String, MergedStage>,
    by_base: &BTreeMap<String, Vec<usize>>,
    map: &SourceMap,
    registry: &StageRegistry,
) -> Result<(), PipelineError> {
    // per instance: the task of the corpus or split it writes, and the instance it came from
    // (pre-filled: with a cycle, which the graph reports next, an input can come later)
    let mut tasks: Vec<Option<(Task, usize)>> = vec![None; instances.len()];
    // per base of a kind whose params name inputs: the inputs some cell names
    let mut named_used: BTreeMap<String, (InputContract, BTreeSet<String>)> = BTreeMap::new();
    for i in 0..instances.len() {
        select_named_inputs(&mut instances[i], merged, map, registry, &mut named_used)?;
        let inst = &instances[i];
        let base = &*inst.base;
        let at_input = |input: &str, e: ContractError| {
            map.error(
                &["stages", base, "inputs", input],
                format!("stage `{}`: {e}", inst.name),
            )
        };
        let Some(erased) = registry.get(&inst.kind) else {
            continue;
        };
        let contract = erased.inputs();
        // the names are a stage's, checked at its first cell (a set of the stage names
        // checked so far was 7 MB at 100,000 stages, #27)
        if by_base.get(base).and_then(|cells| cells.first()) == Some(&i) {
            let written = merged[base].doc.inputs.keys();
            contract::check_names(erased.kind(), contract, written).map_err(|e| {
                let input = match &e {
                    ContractError::Unknown { name, .. } => name.clone(),
                    _ => String::new(),
                };
                at_input(&input, e)
            })?;
        }
        // each input's task (when every upstream result bound to it agrees) and origin
        let upstream: BTreeMap<&str, (Task, usize)> = inst
            .inputs
            .iter()
            .filter_map(|(input, refs)| {
                let first = tasks[refs.first()?.instance]?;
                refs.iter()
                    .all(|r| tasks[r.instance].map(|(t, _)| t) == Some(first.0))
                    .then_some((input, first))
            })
            .collect();
        let names: Vec<&str> = inst.inputs.keys().collect();
        let facts = erased.tasks(&inst.params.parsed(), &names, &|input| {
            upstream.get(input).map(|&(t, _)| t)
        });
        for (input, refs) in &inst.inputs {
            if let Some(spec) = contract.get(input) {
                let bound: Vec<String> = refs
                    .iter()
                    .map(|r| instances[r.instance].name.clone())
                    .collect();
                contract::check_arity(spec, &bound).map_err(|e| at_input(input, e))?;
            }
            let (Some(&needed), Some(&(found, origin))) =
                (facts.required.get(input), upstream.get(input))
            else {
                continue;
            };
            if needed != found {
                let origin = &instances[origin];
                let why = match origin.params.get("format").and_then(|f| f.as_str()) {
                    Some(format) => format!("corpus `{}` has format `{format}`", origin.name),
                    None => format!("from `{}`", origin.name),
                };
                let upstream = refs
                    .first()
                    .map_or(String::new(), |r| instances[r.instance].name.clone());
                let e = ContractError::WrongTask {
                    name: input.to_string(),
                    upstream,
                    found: TaskName(found),
                    needed: TaskName(needed),
                    why,
                };
                return Err(at_input(input, e));
            }
        }
        // a task passed through from an input keeps that input's origin (for the message)
        tasks[i] = facts.output.map(|task| {
            let origin = upstream
                .values()
                .find(|&&(t, _)| t == task)
                .map_or(i, |&(_, origin)| origin);
            (task, origin)
        });
    }
    for (base, (contract, used)) in named_used {
        let InputContract::DeclaredAndNamed {
            declared, by_param, ..
        } = contract
        else {
            continue;
        };
        let unused = merged[&base]
            .doc
            .inputs
            .keys()
            .find(|name| !used.contains(*name) && !declared.iter().any(|s| s.name == *name));
        if let Some(name) = unused {
            let e = ContractError::NamedUnused {
                param: by_param,
                name: name.to_string(),
            };
            return Err(map.error(
                &["stages", &base, "inputs", name],
                format!("stage `{base}`: {e}"),
            ));
        }
    }
    Ok(())
}

/// For a kind whose params name some of its inputs ([`InputContract::DeclaredAndNamed`]):
/// checks that every name is bound, then drops the inputs this cell's params do not name
/// (so they neither enter its key nor order it after their producers), recording which
/// inputs the stage's cells use.
fn select_named_inputs(
    inst: &mut StageInstance,
    merged: &BTreeMap<String, MergedStage>,
    map: &SourceMap,
    registry: &StageRegistry,
    named_used: &mut BTreeMap<String, (InputContract, BTreeSet<String>)>,
) -> Result<(), PipelineError> {
    let Some(erased) = registry.get(&inst.kind) else {
        return Ok(());
    };
    let contract = erased.inputs();
    let InputContract::DeclaredAndNamed {
        declared, by_param, ..
    } = contract
    else {
        return Ok(());
    };
    let named = erased.named_inputs(&inst.params.parsed());
    let bound: Vec<&str> = merged[&*inst.base].doc.inputs.keys().collect();
    contract::check_named(contract, &named, &bound).map_err(|e| {
        map.error(
            &["stages", &inst.base, "params", by_param],
            format!("stage `{}`: {e}", inst.name),
        )
    })?;
    inst.inputs.retain(|name, _| {
        named.iter().any(|n| n == name) || declared.iter().any(|s| s.name == name)
    });
    named_used
        .entry(inst.base.to_string())
        .or_insert_with(|| (contract, BTreeSet::new()))
        .1
        .extend(named);
    Ok(())
}
