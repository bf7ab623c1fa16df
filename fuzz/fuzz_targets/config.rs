//! Fuzzes [`server::config::parse`], the TOML config loader: any text gives a usable
//! configuration (valid settings, unique non-empty model names) or an error naming the file,
//! and never a panic. The input is the file's text; non-UTF-8 input is skipped, as reading the
//! file already rejects it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match server::config::parse(text, Path::new("fuzzed.toml")) {
        Ok((settings, models)) => {
            assert_eq!(settings.validate(), Ok(()));
            let mut names = HashSet::new();
            for model in &models {
                assert!(!model.name.trim().is_empty(), "{model:?}");
                assert!(names.insert(&model.name), "duplicate {model:?}");
            }
        }
        Err(error) => {
            let message = error.to_string();
            assert!(message.contains("fuzzed.toml"), "{message}");
        }
    }
});
