//! The rules directory: its files, loaded and merged into `Rules`.

use super::model::RawRulesFile;
use super::{Rules, TableRule};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The rules files in `dir`: its `*.yaml` / `*.yml` files, sorted by name.
pub fn rule_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    Ok(files)
}

/// Loads and merges the rules files in `dir` (`rule_files`).
pub fn load_rules(dir: &Path) -> Result<Rules, Vec<String>> {
    let mut rules = Rules::default();
    let files = match rule_files(dir) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(rules),
        Err(e) => return Err(vec![format!("rules: cannot read {}: {e}", dir.display())]),
    };
    let mut errors = Vec::new();
    let mut origin: BTreeMap<String, PathBuf> = BTreeMap::new();
    for file in files {
        let parsed = std::fs::read_to_string(&file)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_saphyr::from_str::<RawRulesFile>(&t).map_err(|e| e.to_string()));
        match parsed {
            Ok(f) => {
                for (table, raw) in f.tables {
                    if let Some(prev) = origin.get(&table) {
                        errors.push(format!(
                            "{}: table {table:?} already has a rule in {}",
                            file.display(),
                            prev.display()
                        ));
                        continue;
                    }
                    origin.insert(table.clone(), file.clone());
                    rules.tables.insert(
                        table,
                        TableRule {
                            auto_increment: raw.auto_increment.clone(),
                            mirror: raw.mirror.unwrap_or(true),
                            raw,
                        },
                    );
                }
            }
            Err(e) => errors.push(format!("{}: {e}", file.display())),
        }
    }
    if errors.is_empty() {
        Ok(rules)
    } else {
        Err(errors)
    }
}
