//! `resources:` of a stage: what one of its cells asks a cluster scheduler for (CPUs,
//! memory, GPUs, time, partition). Written at stage, template or profile level; never part
//! of a stage's key (where a result is computed does not change it).

use serde::{Deserialize, Deserializer, Serialize};

/// Cluster resources of one stage instance; every field optional (the scheduler's default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPUs of the job (`--cpus-per-task`).
    #[serde(default)]
    pub cpus: Option<u32>,
    /// Memory (`--mem`): `32G`, `512M`, or megabytes as a number.
    #[serde(default, deserialize_with = "memory")]
    pub mem: Option<String>,
    /// GPUs (`--gres=gpu:N`).
    #[serde(default)]
    pub gpus: Option<u32>,
    /// Time limit (`--time`): `04:00:00`, `1-00:00:00`, or minutes as a number.
    #[serde(default, deserialize_with = "time_limit")]
    pub time: Option<String>,
    /// Partition (`--partition`).
    #[serde(default)]
    pub partition: Option<String>,
    /// More `sbatch` flags, verbatim (`["--qos=high"]`).
    #[serde(default)]
    pub extra: Vec<String>,
}

impl Resources {
    /// No field set: the scheduler's defaults.
    pub const UNSET: Resources = Resources {
        cpus: None,
        mem: None,
        gpus: None,
        time: None,
        partition: None,
        extra: Vec::new(),
    };

    /// Whether no field is set (the scheduler's defaults).
    pub fn is_unset(&self) -> bool {
        *self == Resources::UNSET
    }

    /// These resources with every field `over` sets replacing this one's (`extra` flags
    /// are appended): a stage over its template, a profile over the stage.
    pub fn overlaid(&self, over: &Resources) -> Resources {
        let mut extra = self.extra.clone();
        extra.extend(over.extra.iter().cloned());
        Resources {
            cpus: over.cpus.or(self.cpus),
            mem: over.mem.clone().or_else(|| self.mem.clone()),
            gpus: over.gpus.or(self.gpus),
            time: over.time.clone().or_else(|| self.time.clone()),
            partition: over.partition.clone().or_else(|| self.partition.clone()),
            extra,
        }
    }

    /// Whether nothing is asked for.
    pub fn is_empty(&self) -> bool {
        *self == Resources::default()
    }
}

/// A scalar written as a number or a string, as text.
fn scalar_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Int(u64),
        Text(String),
    }
    Ok(Option::<Scalar>::deserialize(d)?.map(|s| match s {
        Scalar::Int(n) => n.to_string(),
        Scalar::Text(t) => t.trim().to_string(),
    }))
}

fn memory<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = scalar_text(d)?;
    if let Some(t) = &text {
        let digits = t.trim_end_matches(['K', 'M', 'G', 'T', 'k', 'm', 'g', 't']);
        let suffix = t.len() - digits.len();
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || suffix > 1 {
            return Err(serde::de::Error::custom(format!(
                "`mem: {t}`: write a size such as 32G, 512M or a number of megabytes"
            )));
        }
    }
    Ok(text)
}

fn time_limit<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = scalar_text(d)?;
    if let Some(t) = &text {
        let ok = !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_digit() || b == b':' || b == b'-')
            && t.bytes().next().is_some_and(|b| b.is_ascii_digit());
        if !ok {
            return Err(serde::de::Error::custom(format!(
                "`time: {t}`: write a Slurm time limit such as \"04:00:00\", \"1-00:00:00\" \
                 or a number of minutes"
            )));
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_overlays_a_stage_field_by_field() {
        let stage: Resources =
            serde_yaml::from_str("{cpus: 8, mem: 32G, time: \"04:00:00\", extra: [--qos=high]}")
                .unwrap();
        let profile: Resources = serde_yaml::from_str("{cpus: 2, gpus: 1, mem: 4096}").unwrap();
        let both = stage.overlaid(&profile);
        assert_eq!(both.cpus, Some(2));
        assert_eq!(both.mem.as_deref(), Some("4096"));
        assert_eq!(both.gpus, Some(1));
        assert_eq!(both.time.as_deref(), Some("04:00:00"));
        assert_eq!(both.extra, vec!["--qos=high".to_string()]);
    }

    #[test]
    fn bad_sizes_and_unknown_fields_are_refused() {
        assert!(serde_yaml::from_str::<Resources>("{mem: lots}").is_err());
        assert!(serde_yaml::from_str::<Resources>("{time: soon}").is_err());
        assert!(serde_yaml::from_str::<Resources>("{cpu: 2}").is_err());
    }
}
