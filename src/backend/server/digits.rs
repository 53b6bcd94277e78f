//! The digit judge on a server: servers cannot portably be made to continue an assistant turn
//! that srlm began with "Score: ", so the judgement is generated (greedy) with log-probs and
//! the distribution is read at the digit token that follows the judgement's last "Score:".
use super::wire::TokenLogprob;
use crate::engine::judge::DigitScore;

/// Alternatives asked for per position (OpenAI's maximum).
pub const TOP_LOGPROBS: u32 = 20;

/// The expected score at the token after the last `Score:` (case-insensitive), from that
/// position's top log-probs over the digits 0–5 (a token that is a digit with spaces around it
/// counts as that digit). `None` when the judgement has no such position.
pub fn score_after_colon(tokens: &[TokenLogprob]) -> Option<DigitScore> {
    let mut text = String::new();
    let mut starts = Vec::with_capacity(tokens.len());
    for t in tokens {
        starts.push(text.len());
        text.push_str(&t.token);
    }
    let lower = text.to_ascii_lowercase();
    let mut pos = None;
    let mut from = 0;
    while let Some(i) = lower[from..].find("score:") {
        pos = Some(from + i + "score:".len());
        from += i + 1;
    }
    let colon_end = pos?;
    // the first token ending past the colon that holds a digit
    let j = (0..tokens.len()).find(|&j| {
        starts[j] + tokens[j].token.len() > colon_end
            && tokens[j]
                .token
                .trim()
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
    })?;
    let t = &tokens[j];
    let mut raw = [0f64; 6];
    let mut seen = false;
    let alts = t
        .top_logprobs
        .iter()
        .map(|a| (a.token.as_str(), a.logprob))
        .chain((t.top_logprobs.is_empty()).then_some((t.token.as_str(), t.logprob)));
    for (tok, lp) in alts {
        if let Some(d) = digit(tok) {
            raw[d] += lp.exp();
            seen = true;
        }
    }
    if !seen {
        return None;
    }
    let mass: f64 = raw.iter().sum();
    let mut probs = [0f64; 6];
    for (p, r) in probs.iter_mut().zip(&raw) {
        *p = r / mass;
    }
    let expected = probs.iter().enumerate().map(|(d, p)| d as f64 * p).sum();
    Some(DigitScore {
        expected,
        probs,
        mass,
    })
}

fn digit(tok: &str) -> Option<usize> {
    match tok.trim() {
        s if s.len() == 1 => s.parse::<usize>().ok().filter(|d| *d <= 5),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::wire::TopLogprob;
    use super::*;

    fn tok(t: &str, alts: &[(&str, f64)]) -> TokenLogprob {
        TokenLogprob {
            token: t.into(),
            logprob: alts.first().map(|a| a.1).unwrap_or(0.0),
            top_logprobs: alts
                .iter()
                .map(|(t, p)| TopLogprob {
                    token: t.to_string(),
                    logprob: p.ln(),
                })
                .collect(),
        }
    }

    #[test]
    fn reads_the_digit_after_the_last_score() {
        let toks = vec![
            tok("Fine", &[]),
            tok(". Score", &[]),
            tok(":", &[]),
            tok(
                " 4",
                &[
                    (" 4", 0.6),
                    ("4", 0.1),
                    (" 3", 0.2),
                    (" 9", 0.05),
                    ("hi", 0.05),
                ],
            ),
            tok(".", &[]),
        ];
        let d = score_after_colon(&toks).unwrap();
        assert!((d.mass - 0.9).abs() < 1e-9);
        assert!((d.probs[4] - 0.7 / 0.9).abs() < 1e-9);
        assert!((d.expected - (4.0 * 0.7 + 3.0 * 0.2) / 0.9).abs() < 1e-9);
        assert!(score_after_colon(&[tok("no score here", &[])]).is_none());
        assert!(score_after_colon(&[tok("Score:", &[]), tok(" great", &[])]).is_none());
    }
}
