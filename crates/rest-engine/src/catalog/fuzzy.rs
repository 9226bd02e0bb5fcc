//! The "Perhaps you meant …" of PostgREST's hints (`PGRST200`, `PGRST202`,
//! `PGRST205`): the closest name in a set, scored as the `fuzzyset` library
//! PostgREST uses scores it (cosine similarity of character 3-grams, else
//! 2-grams, of the lower-cased, padded name; the best 50 rescored by
//! Levenshtein distance; 0.33 at least by default, 0.75 for the names of
//! tables and functions, as PostgREST's getFuzzyHint asks).
use std::collections::HashMap;

/// fuzzyset's default minimum score (`getOne`).
pub(crate) const MIN_SCORE: f64 = 0.33;

fn normalized(s: &str) -> String {
    s.to_lowercase().chars().filter(|c| c.is_alphanumeric() || *c == ',' || *c == ' ').collect()
}

fn grams(s: &str, size: usize) -> HashMap<Vec<char>, u32> {
    let mut padded: Vec<char> = format!("-{}-", normalized(s)).chars().collect();
    while padded.len() < size {
        padded.push('-');
    }
    let mut counts = HashMap::new();
    for window in padded.windows(size) {
        *counts.entry(window.to_vec()).or_insert(0) += 1;
    }
    counts
}

fn norm(counts: &HashMap<Vec<char>, u32>) -> f64 {
    counts.values().map(|c| f64::from(c * c)).sum::<f64>().sqrt()
}

fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = (previous + usize::from(ca != cb)).min(row[j] + 1).min(current + 1);
            previous = current;
        }
    }
    row[b.len()]
}

/// The candidates close to `value`, best first, with their scores (1.0: the
/// same name, ignoring case).
pub(crate) fn matches<'a>(candidates: &[&'a str], value: &str) -> Vec<(f64, &'a str)> {
    matches_from(candidates, value, MIN_SCORE)
}

/// The best candidate scoring at least `min_score` (fuzzyset's
/// `getOneWithMinScore`).
pub(crate) fn best<'a>(candidates: &[&'a str], value: &str, min_score: f64) -> Option<&'a str> {
    matches_from(candidates, value, min_score).first().map(|(_, c)| *c)
}

fn matches_from<'a>(candidates: &[&'a str], value: &str, min_score: f64) -> Vec<(f64, &'a str)> {
    let key = value.to_lowercase();
    if let Some(exact) = candidates.iter().find(|c| c.to_lowercase() == key) {
        return vec![(1.0, exact)];
    }
    for size in [3, 2] {
        let wanted = grams(value, size);
        let wanted_norm = norm(&wanted);
        let mut scored: Vec<(f64, &str)> = candidates
            .iter()
            .filter_map(|c| {
                let have = grams(c, size);
                let dot: u32 = wanted.iter().filter_map(|(g, n)| have.get(g).map(|m| n * m)).sum();
                (dot > 0).then(|| (f64::from(dot) / (wanted_norm * norm(&have)), *c))
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored.truncate(50);
        let mut rescored: Vec<(f64, &str)> = scored
            .into_iter()
            .map(|(_, c)| {
                let longest = key.chars().count().max(c.chars().count()).max(1);
                (1.0 - levenshtein(&key, &c.to_lowercase()) as f64 / longest as f64, c)
            })
            .filter(|(score, _)| *score >= min_score)
            .collect();
        rescored.sort_by(|a, b| b.0.total_cmp(&a.0));
        if !rescored.is_empty() {
            return rescored;
        }
    }
    vec![]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_as_postgrest_does() {
        // PostgREST's own examples (Error.hs, noRelBetweenHint).
        assert_eq!(matches(&["films"], "film").first().map(|m| m.1), Some("films"));
        assert_eq!(matches(&["directors", "roles", "actors"], "role").first().map(|m| m.1), Some("roles"));
        assert_eq!(matches(&["directors", "roles", "actors"], "actors").first().map(|m| m.0), Some(1.0));
        assert!(matches(&["directors", "roles", "actors"], "noclosealternative").is_empty());
        assert!(matches(&["films"], "noclosealternative").is_empty());
    }

    #[test]
    fn hints_functions_and_parameters_as_postgrest_does() {
        // PostgREST's noRpcHint examples (Error.hs): names at 0.75, parameter lists at 0.33.
        assert_eq!(best(&["another", "test"], "testt", 0.75), Some("test"));
        assert_eq!(best(&["another", "test"], "other", 0.75), None);
        assert_eq!(best(&["another", "test"], "noclosealternative", 0.75), None);
        let lists = ["(name, param, val)", "(attr, id)"];
        assert_eq!(best(&lists, "(nam, pqaram, vall)", MIN_SCORE), Some("(name, param, val)"));
        assert_eq!(best(&lists, "(param, val)", MIN_SCORE), Some("(name, param, val)"));
        assert_eq!(best(&lists, "(attrs, id)", MIN_SCORE), Some("(attr, id)"));
        assert_eq!(best(&lists, "(id)", MIN_SCORE), Some("(attr, id)"));
        assert_eq!(best(&lists, "(noclosealternative)", MIN_SCORE), None);
    }
}
