//! Progress bars for extraction (only on a terminal).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use weir_extract::{Observer, TableSummary};
use weir_source::ReadProgress;

pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<Vec<(String, ProgressBar, Arc<ReadProgress>)>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Bars {
    pub fn new() -> Self {
        Bars {
            multi: MultiProgress::new(),
            bars: Mutex::new(Vec::new()),
            stop: Arc::default(),
        }
    }

    pub fn finish(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Ok(bars) = self.bars.lock() {
            for (_, bar, _) in bars.iter() {
                if !bar.is_finished() {
                    bar.finish_and_clear();
                }
            }
        }
    }
}

impl Observer for Bars {
    fn planned(&self, _run_id: &str, tables: &[(String, u64, Arc<ReadProgress>)]) {
        let style = ProgressStyle::with_template("{spinner} {prefix:<36} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let mut bars = match self.bars.lock() {
            Ok(b) => b,
            Err(_) => return,
        };
        for (name, _, progress) in tables {
            let bar = self.multi.add(
                ProgressBar::new_spinner()
                    .with_style(style.clone())
                    .with_prefix(name.clone()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bars.push((name.clone(), bar, progress.clone()));
        }
        let list: Vec<(ProgressBar, Arc<ReadProgress>)> = bars
            .iter()
            .map(|(_, b, p)| (b.clone(), p.clone()))
            .collect();
        let stop = self.stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for (bar, p) in &list {
                    if !bar.is_finished() {
                        let rows = p.rows.load(Ordering::Relaxed);
                        let bytes = p.bytes.load(Ordering::Relaxed);
                        bar.set_message(format!("{rows} rows, {:.1} MB read", bytes as f64 / 1e6));
                    }
                }
                std::thread::sleep(Duration::from_millis(150));
            }
        });
    }

    fn table_done(&self, t: &TableSummary) {
        if let Ok(bars) = self.bars.lock() {
            if let Some((_, bar, _)) = bars.iter().find(|(n, ..)| n == &t.name) {
                bar.finish_with_message(format!("{} rows in {:.2}s", t.rows, t.seconds));
            }
        }
    }
}
