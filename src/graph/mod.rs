//! The expanded DAG (petgraph): cycle detection, topological order, selection, drawing.

use std::collections::BTreeSet;

use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::Direction;

use crate::pipeline::{Pipeline, PipelineError};

/// Dependency graph over [`Pipeline::instances`]; node i is instance i, edges point
/// from an input to the stage that reads it.
pub struct StageGraph {
    graph: DiGraph<usize, ()>,
    order: Vec<usize>,
}

impl StageGraph {
    /// Builds the graph; a cycle is an error that prints the cycle.
    pub fn build(p: &Pipeline) -> Result<Self, PipelineError> {
        let n = p.instances.len();
        let refs: usize = p.instances.iter().map(|s| s.inputs.len()).sum();
        let mut graph = DiGraph::with_capacity(n, refs);
        let nodes: Vec<NodeIndex> = (0..n).map(|i| graph.add_node(i)).collect();
        let mut ups: Vec<usize> = Vec::new();
        for (i, inst) in p.instances.iter().enumerate() {
            ups.clear();
            ups.extend(inst.inputs.values().flatten().map(|r| r.instance));
            ups.sort_unstable();
            ups.dedup();
            for &u in &ups {
                graph.add_edge(nodes[u], nodes[i], ());
            }
        }
        match toposort(&graph, None) {
            Ok(order) => Ok(StageGraph {
                order: order.into_iter().map(|n| graph[n]).collect(),
                graph,
            }),
            Err(_) => Err(cycle_error(p, &graph)),
        }
    }

    /// Instances in an order where every input comes before its reader.
    pub fn topo_order(&self) -> &[usize] {
        &self.order
    }

    /// Direct upstream instances of `i`.
    pub fn parents(&self, i: usize) -> Vec<usize> {
        self.graph
            .neighbors_directed(NodeIndex::new(i), Direction::Incoming)
            .map(|n| self.graph[n])
            .collect()
    }

    /// `roots` and everything they (transitively) read.
    pub fn with_ancestors(&self, roots: &[usize]) -> BTreeSet<usize> {
        self.closure(roots, Direction::Incoming)
    }

    /// `roots` and everything that (transitively) reads them.
    pub fn with_descendants(&self, roots: &[usize]) -> BTreeSet<usize> {
        self.closure(roots, Direction::Outgoing)
    }

    fn closure(&self, roots: &[usize], dir: Direction) -> BTreeSet<usize> {
        let mut seen: BTreeSet<usize> = BTreeSet::new();
        let mut stack: Vec<usize> = roots.to_vec();
        while let Some(i) = stack.pop() {
            if seen.insert(i) {
                stack.extend(
                    self.graph
                        .neighbors_directed(NodeIndex::new(i), dir)
                        .map(|n| self.graph[n]),
                );
            }
        }
        seen
    }

    /// All edges as (from, to) instance indices.
    pub fn edges(&self) -> Vec<(usize, usize)> {
        self.graph
            .raw_edges()
            .iter()
            .map(|e| (self.graph[e.source()], self.graph[e.target()]))
            .collect()
    }
}

/// Finds one cycle and names it: `a -> b -> a`.
fn cycle_error(p: &Pipeline, graph: &DiGraph<usize, ()>) -> PipelineError {
    let scc = tarjan_scc(graph)
        .into_iter()
        .find(|c| c.len() > 1 || graph.contains_edge(c[0], c[0]))
        .unwrap_or_default();
    let members: BTreeSet<NodeIndex> = scc.iter().copied().collect();
    // Walk inside the component from its first node until we come back.
    let mut path: Vec<NodeIndex> = Vec::new();
    if let Some(&start) = scc.iter().min() {
        let mut cur = start;
        loop {
            path.push(cur);
            let next = graph
                .neighbors_directed(cur, Direction::Outgoing)
                .filter(|n| members.contains(n))
                .min();
            match next {
                Some(n) if n == start => break,
                Some(n) if path.contains(&n) => {
                    let pos = path.iter().position(|x| *x == n).unwrap_or(0);
                    path.drain(..pos);
                    break;
                }
                Some(n) => cur = n,
                None => break,
            }
        }
    }
    let names: Vec<&str> = path
        .iter()
        .map(|n| p.instances[graph[*n]].name.as_str())
        .collect();
    let first = path.first().map(|n| &p.instances[graph[*n]]);
    let text = if names.is_empty() {
        "the stages form a cycle".to_string()
    } else {
        format!("cycle: {} -> {}", names.join(" -> "), names[0])
    };
    match first {
        Some(inst) => PipelineError::new(&p.file, inst.line, 3, text),
        None => PipelineError::new(&p.file, 1, 1, text),
    }
}

/// Output format of `pipe dag`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DagFormat {
    Mermaid,
    Dot,
}

/// Draws the expanded DAG.
pub fn draw(p: &Pipeline, g: &StageGraph, format: DagFormat) -> String {
    let mut out = String::new();
    match format {
        DagFormat::Mermaid => {
            out.push_str("flowchart TD\n");
            for (i, inst) in p.instances.iter().enumerate() {
                out.push_str(&format!("  s{i}[\"{} ({})\"]\n", inst.name, inst.kind));
            }
            for (a, b) in g.edges() {
                out.push_str(&format!("  s{a} --> s{b}\n"));
            }
        }
        DagFormat::Dot => {
            out.push_str("digraph pipe {\n  rankdir=TB;\n  node [shape=box];\n");
            for (i, inst) in p.instances.iter().enumerate() {
                out.push_str(&format!(
                    "  s{i} [label=\"{}\\n({})\"];\n",
                    inst.name.replace('"', "\\\""),
                    inst.kind
                ));
            }
            for (a, b) in g.edges() {
                out.push_str(&format!("  s{a} -> s{b};\n"));
            }
            out.push_str("}\n");
        }
    }
    out
}
