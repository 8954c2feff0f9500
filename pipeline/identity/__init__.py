"""The identity stage, by job: `embedding` (the model and its caches), `matching` (the pre-label rule,
pure numpy), `labels` (verification labels in force), `published` (what earlier versions hold),
`quality` (pre-labels against the labels), `rule` (what a crop is matched against, and its
fingerprint) and `stage` (the run-wide stage). Import a name from the
module that defines it."""
