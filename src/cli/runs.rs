//! `vsr plot` (training curves of runs as a PNG) and `vsr compare` (are two runs the same run?),
//! both reading the runs' TensorBoard event files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use plotters::prelude::*;
use serde::Serialize;

use crate::image::RgbImage;
use crate::train::tfevents::{Value, event_files, read_events};

/// A run's scalars: tag -> step -> value (the last one logged for that step: a resumed run
/// logs again the steps after its checkpoint).
type Scalars = BTreeMap<String, BTreeMap<u64, f32>>;

/// Every scalar of the run in `dir` (all its event files, oldest first).
pub fn read_run(dir: &Path) -> anyhow::Result<Scalars> {
    let files = event_files(dir)?;
    if files.is_empty() {
        bail!("{}: no TensorBoard event files (events.out.tfevents.*): not a vsr run directory", dir.display());
    }
    let mut out = Scalars::new();
    for f in files {
        for r in read_events(&f)? {
            if let Value::Scalar(v) = r.value {
                out.entry(r.tag).or_default().insert(r.step, v);
            }
        }
    }
    Ok(out)
}

#[derive(Debug, clap::Args)]
pub struct PlotArgs {
    /// Run directories (runs/<name>).
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Output PNG.
    #[arg(short, long, default_value = "curves.png")]
    pub out: PathBuf,
    /// Scalar tags, one chart each.
    #[arg(long, value_delimiter = ',', default_value = "train/loss,val/psnr,train/lr")]
    pub tags: Vec<String>,
    /// Exponential smoothing of the noisy train/* curves (TensorBoard's slider; not the LR or the
    /// loss scale), 0 for none. val/psnr is drawn with the bilinear baseline, dashed.
    #[arg(long, default_value_t = 0.9)]
    pub smooth: f64,
    /// Chart width in pixels.
    #[arg(long, default_value_t = 1000)]
    pub width: u32,
}

/// The chart labels' font, bundled (assets/fonts, see assets/ATTRIBUTION.md).
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

pub fn plot(a: PlotArgs) -> anyhow::Result<()> {
    let runs: Vec<(String, Scalars)> = a
        .runs
        .iter()
        .map(|d| Ok((run_name(d), read_run(d)?)))
        .collect::<anyhow::Result<_>>()?;
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| anyhow::anyhow!("the bundled font could not be loaded"))?;
    let panel_h = 300u32;
    let (w, h) = (a.width, panel_h * a.tags.len() as u32);
    let mut buf = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        for (panel, tag) in root.split_evenly((a.tags.len(), 1)).iter().zip(&a.tags) {
            // Smoothing is for noisy per-step values, not for schedules (LR, loss scale).
            let noisy = tag.starts_with("train/") && !matches!(tag.as_str(), "train/lr" | "train/loss_scale");
            let smooth = if noisy { a.smooth } else { 0.0 };
            let series: Vec<(String, Vec<(f64, f64)>)> = runs
                .iter()
                .filter_map(|(name, s)| s.get(tag).map(|v| (name.clone(), smoothed(v, smooth))))
                .filter(|(_, v)| !v.is_empty())
                .collect();
            // Validation PSNR is read against the bilinear baseline's, drawn dashed on the same axes.
            let baselines: Vec<(usize, Vec<(f64, f64)>)> = if tag == "val/psnr" {
                runs.iter()
                    .enumerate()
                    .filter(|(_, (name, _))| series.iter().any(|(n, _)| n == name))
                    .filter_map(|(i, (_, s))| s.get("val/psnr_bilinear").map(|v| (i, smoothed(v, 0.0))))
                    .collect()
            } else {
                Vec::new()
            };
            if series.is_empty() {
                eprintln!("warning: no run has `{tag}`");
                continue;
            }
            let (x0, x1) = bounds(series.iter().flat_map(|(_, v)| v.iter().map(|p| p.0)));
            let (y0, y1) = bounds(series.iter().flat_map(|(_, v)| v.iter().map(|p| p.1)).chain(baselines.iter().flat_map(|(_, v)| v.iter().map(|p| p.1))));
            let caption = if smooth > 0.0 { format!("{tag} (smoothed {smooth})") } else { tag.clone() };
            let mut chart = ChartBuilder::on(panel)
                .caption(caption, ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(32)
                .y_label_area_size(70)
                .build_cartesian_2d(x0..x1, y0..y1)
                .map_err(plot_err)?;
            chart.configure_mesh().x_desc("step").label_style(("sans-serif", 13)).draw().map_err(plot_err)?;
            for (i, points) in baselines {
                let colour = Palette99::pick(i).to_rgba();
                chart
                    .draw_series(DashedLineSeries::new(points, 6, 4, colour.stroke_width(1)))
                    .map_err(plot_err)?
                    .label(format!("{}: bilinear", runs[i].0))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(1)));
            }
            for (i, (name, points)) in series.into_iter().enumerate() {
                let colour = Palette99::pick(i).to_rgba();
                chart
                    .draw_series(LineSeries::new(points, colour.stroke_width(2)))
                    .map_err(plot_err)?
                    .label(name)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
            }
            chart
                .configure_series_labels()
                .label_font(("sans-serif", 13))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(plot_err)?;
        }
        root.present().map_err(plot_err)?;
    }
    RgbImage { width: w as usize, height: h as usize, data: buf }.save_png(&a.out)?;
    println!("wrote {} ({} runs, {})", a.out.display(), runs.len(), a.tags.join(", "));
    Ok(())
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {e:?}")
}

fn run_name(dir: &Path) -> String {
    dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| dir.display().to_string())
}

/// TensorBoard's smoothing: an exponential moving average, debiased.
fn smoothed(values: &BTreeMap<u64, f32>, weight: f64) -> Vec<(f64, f64)> {
    let mut last = 0.0;
    let mut norm = 0.0;
    values
        .iter()
        .filter(|(_, v)| v.is_finite())
        .map(|(&s, &v)| {
            last = last * weight + (1.0 - weight) * v as f64;
            norm = norm * weight + (1.0 - weight);
            (s as f64, if weight > 0.0 { last / norm } else { v as f64 })
        })
        .collect()
}

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    let pad = ((hi - lo) * 0.05).max(hi.abs() * 1e-6).max(1e-12);
    (lo - pad, hi + pad)
}

#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// Two run directories.
    pub a: PathBuf,
    pub b: PathBuf,
    /// Scalar tags to compare.
    #[arg(long, value_delimiter = ',', default_value = "train/loss,val/loss,val/psnr")]
    pub tags: Vec<String>,
    /// Largest difference still called equal (0: bit for bit).
    #[arg(long, default_value_t = 0.0)]
    pub tolerance: f64,
    /// Also write the result as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One tag's comparison.
#[derive(Debug, Serialize)]
pub struct TagDiff {
    pub tag: String,
    pub steps_a: usize,
    pub steps_b: usize,
    pub common_steps: usize,
    pub identical: usize,
    pub max_abs_diff: f64,
    pub first_difference_step: Option<u64>,
}

/// Compares two runs tag by tag; fails (non-zero exit) if they differ by more than the
/// tolerance or do not hold the same steps.
pub fn compare(a: CompareArgs) -> anyhow::Result<()> {
    let ra = read_run(&a.a).with_context(|| format!("reading {}", a.a.display()))?;
    let rb = read_run(&a.b).with_context(|| format!("reading {}", a.b.display()))?;
    let mut diffs = Vec::new();
    for tag in &a.tags {
        let (va, vb) = (ra.get(tag).cloned().unwrap_or_default(), rb.get(tag).cloned().unwrap_or_default());
        let mut d = TagDiff {
            tag: tag.clone(),
            steps_a: va.len(),
            steps_b: vb.len(),
            common_steps: 0,
            identical: 0,
            max_abs_diff: 0.0,
            first_difference_step: None,
        };
        for (s, x) in &va {
            let Some(y) = vb.get(s) else { continue };
            d.common_steps += 1;
            let diff = (*x as f64 - *y as f64).abs();
            if x.to_bits() == y.to_bits() {
                d.identical += 1;
            } else if d.first_difference_step.is_none() && !(diff <= a.tolerance) {
                d.first_difference_step = Some(*s);
            }
            d.max_abs_diff = d.max_abs_diff.max(if diff.is_nan() { f64::INFINITY } else { diff });
        }
        diffs.push(d);
    }
    let mut table = String::from("| tag | steps (a / b) | identical | max abs diff | first difference |\n|---|---|---|---|---|\n");
    for d in &diffs {
        table += &format!(
            "| {} | {} / {} | {} of {} | {:.3e} | {} |\n",
            d.tag,
            d.steps_a,
            d.steps_b,
            d.identical,
            d.common_steps,
            d.max_abs_diff,
            d.first_difference_step.map(|s| format!("step {s}")).unwrap_or_else(|| "-".into())
        );
    }
    super::bench::report(&table, &diffs, a.json.as_deref())?;
    let same = diffs.iter().all(|d| d.steps_a == d.steps_b && d.common_steps == d.steps_a && d.max_abs_diff <= a.tolerance);
    if !same {
        bail!("{} and {} differ (see the table)", a.a.display(), a.b.display());
    }
    if diffs.iter().all(|d| d.common_steps == 0) {
        bail!("the runs share no logged steps of {}", a.tags.join(", "));
    }
    println!("same run: every compared value is within {} ({} values)", a.tolerance, diffs.iter().map(|d| d.common_steps).sum::<usize>());
    Ok(())
}
