//! The lineage as a layered graph for the report: runs are boxes (stage, and the tag of what
//! they made), roots (inputs no run on the walk produced: the base model, seed files) are grey
//! boxes, edges go from the producing run to the consuming one. Layers are the longest path
//! from a root (a root sits just above its first consumer), so time flows top to bottom.
//! Drawn with plotters' SVG backend.
use std::collections::{BTreeMap, HashMap};

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::Serialize;
use srlm_store::RunId;

use super::ReportError;
use crate::lineage::Lineage;
use crate::provenance::ObjectRef;
use crate::runs::Labels;

/// One box.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Node {
    /// Stage name, or the root's tag or path.
    pub label: String,
    /// What the run made, by tag (`M3`, `AIFT(M2)`); empty for a root.
    pub detail: String,
    /// Row: one below the lowest row among what it came from.
    pub layer: usize,
    pub run: Option<RunId>,
}

/// Boxes and edges (indices into `nodes`, producer → consumer).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub edges: Vec<(usize, usize)>,
}

impl Graph {
    /// The graph of a walk upstream. A run's input is linked to the run the walk linked it to
    /// (by the input's recorded source where it has one), never to a later run.
    pub fn of(lineage: &Lineage, labels: &Labels) -> Graph {
        let mut runs: Vec<_> = lineage.runs.iter().collect();
        runs.sort_by(|a, b| a.record.started.cmp(&b.record.started));
        let mut g = Graph::default();
        let mut run_node: HashMap<RunId, usize> = HashMap::new();
        let mut roots: BTreeMap<String, usize> = BTreeMap::new();
        for r in &runs {
            let outputs: Vec<&ObjectRef> = r.record.outputs.values().collect();
            let me = g.nodes.len();
            g.nodes.push(Node {
                label: r.record.stage.name.clone(),
                detail: labels.tag_of(&outputs).unwrap_or_default(),
                layer: 1,
                run: Some(r.id),
            });
            run_node.insert(r.id, me);
            let mut groups: BTreeMap<&str, Vec<&ObjectRef>> = BTreeMap::new();
            for (role, o) in &r.record.inputs {
                let group = role.split_once('/').map_or(role.as_str(), |(g, _)| g);
                groups.entry(group).or_default().push(o);
            }
            let mut sources = Vec::new();
            for objs in groups.values() {
                // the run the walk linked the input to (by its recorded source; by content
                // only for working-tree inputs and old records): never a later run
                let producer = objs
                    .iter()
                    .filter_map(|o| lineage.edges.get(&o.id))
                    .flat_map(|link| link.runs.iter())
                    .filter_map(|id| run_node.get(id).copied())
                    .filter(|&p| p != me)
                    .max();
                match producer {
                    Some(p) => sources.push(p),
                    None => {
                        let label = labels.label(objs);
                        let n = *roots.entry(label.clone()).or_insert_with(|| {
                            g.nodes.push(Node {
                                label,
                                detail: String::new(),
                                layer: 0,
                                run: None,
                            });
                            g.nodes.len() - 1
                        });
                        sources.push(n);
                    }
                }
            }
            sources.sort();
            sources.dedup();
            g.nodes[me].layer = 1 + sources.iter().map(|&s| g.nodes[s].layer).max().unwrap_or(0);
            g.edges.extend(sources.into_iter().map(|s| (s, me)));
        }
        // a root sits just above its first consumer, not at the top of a long chain
        for i in 0..g.nodes.len() {
            if g.nodes[i].run.is_none() {
                let first = g
                    .edges
                    .iter()
                    .filter(|e| e.0 == i)
                    .map(|e| g.nodes[e.1].layer)
                    .min();
                g.nodes[i].layer = first.map_or(0, |l| l - 1);
            }
        }
        // no empty row on top (a run without inputs, `seed`, starts at row 1)
        let top = g.nodes.iter().map(|n| n.layer).min().unwrap_or(0);
        for n in &mut g.nodes {
            n.layer -= top;
        }
        g
    }

    /// Node indices per layer, in the order they were met.
    fn layers(&self) -> Vec<Vec<usize>> {
        let n = self.nodes.iter().map(|x| x.layer + 1).max().unwrap_or(0);
        let mut out = vec![Vec::new(); n];
        for (i, x) in self.nodes.iter().enumerate() {
            out[x.layer].push(i);
        }
        out
    }

    /// The graph as an SVG document.
    pub fn to_svg(&self) -> Result<String, ReportError> {
        const COL: i32 = 128;
        const ROW: i32 = 62;
        const BOX: (i32, i32) = (112, 38);
        const PAD: i32 = 8;
        // edges that skip rows run down a gutter on the left, not through the boxes
        const GUTTER: i32 = 28;
        let layers = self.layers();
        let widest = layers.iter().map(Vec::len).max().unwrap_or(1).max(1) as i32;
        let size = (
            (GUTTER + widest * COL + PAD) as u32,
            (layers.len().max(1) as i32 * ROW) as u32,
        );
        let mut at = vec![(0, 0); self.nodes.len()];
        for (l, nodes) in layers.iter().enumerate() {
            // centre each row
            let left = GUTTER + PAD + (widest - nodes.len() as i32) * COL / 2;
            for (k, &i) in nodes.iter().enumerate() {
                at[i] = (left + k as i32 * COL, PAD + l as i32 * ROW);
            }
        }
        let mut svg = String::new();
        {
            let area = SVGBackend::with_string(&mut svg, size).into_drawing_area();
            area.fill(&WHITE).map_err(super::plot_err)?;
            let edge = RGBColor(120, 120, 120);
            let mut long = 0;
            for &(s, d) in &self.edges {
                let from = (at[s].0 + BOX.0 / 2, at[s].1 + BOX.1);
                let to = (at[d].0 + BOX.0 / 2, at[d].1);
                let mut path = vec![from];
                if self.nodes[d].layer > self.nodes[s].layer + 1 {
                    let x = PAD + 5 * (long % 4);
                    long += 1;
                    path.extend([(x, from.1 + 10), (x, to.1 - 10)]);
                }
                let last = *path.last().expect("starts with from");
                path.push(to);
                area.draw(&PathElement::new(path, edge.stroke_width(1)))
                    .map_err(super::plot_err)?;
                // the arrowhead points along the last segment
                let (dx, dy) = ((to.0 - last.0) as f64, (to.1 - last.1) as f64);
                let len = dx.hypot(dy).max(1.0);
                let (ux, uy) = (dx / len, dy / len);
                let back = |w: f64| {
                    (
                        (to.0 as f64 - 8.0 * ux - w * uy) as i32,
                        (to.1 as f64 - 8.0 * uy + w * ux) as i32,
                    )
                };
                area.draw(&Polygon::new(
                    vec![to, back(4.0), back(-4.0)],
                    edge.filled(),
                ))
                .map_err(super::plot_err)?;
            }
            for (i, n) in self.nodes.iter().enumerate() {
                let (x, y) = at[i];
                let fill = match n.run {
                    Some(_) => RGBColor(222, 235, 250),
                    None => RGBColor(235, 235, 235),
                };
                let rect = [(x, y), (x + BOX.0, y + BOX.1)];
                area.draw(&Rectangle::new(rect, fill.filled()))
                    .map_err(super::plot_err)?;
                area.draw(&Rectangle::new(
                    rect,
                    RGBColor(90, 110, 140).stroke_width(1),
                ))
                .map_err(super::plot_err)?;
                let centre = Pos::new(HPos::Center, VPos::Center);
                let text = |size: u32| ("sans-serif", size).into_font().color(&BLACK).pos(centre);
                let lines: Vec<(&str, u32)> = match n.detail.is_empty() {
                    true => vec![(n.label.as_str(), 13)],
                    false => vec![(n.label.as_str(), 13), (n.detail.as_str(), 11)],
                };
                let step = BOX.1 / (lines.len() as i32 + 1);
                for (k, (s, size)) in lines.into_iter().enumerate() {
                    let s: String = s.chars().take(18).collect();
                    let pos = (x + BOX.0 / 2, y + step * (k as i32 + 1));
                    area.draw(&Text::new(s, pos, text(size)))
                        .map_err(super::plot_err)?;
                }
            }
            area.present().map_err(super::plot_err)?;
        }
        Ok(svg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_follow_the_longest_path_and_the_svg_has_a_box_per_node() {
        let node = |label: &str, layer| Node {
            label: label.into(),
            detail: String::new(),
            layer,
            run: None,
        };
        let g = Graph {
            nodes: vec![node("M0", 0), node("sft", 1), node("dpo", 2)],
            edges: vec![(0, 1), (1, 2)],
        };
        assert_eq!(g.layers(), vec![vec![0], vec![1], vec![2]]);
        let svg = g.to_svg().unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert_eq!(svg.matches("<polygon").count(), 2, "one arrowhead per edge");
        for l in ["M0", "sft", "dpo"] {
            assert!(
                svg.contains(&format!(">{l}<")) || svg.contains(&format!(">\n{l}\n<")),
                "{svg}"
            );
        }
    }
}
