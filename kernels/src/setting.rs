//! Process-wide settings that a program sets, or else the environment chooses: conv precision,
//! LibTorch's layout, LibTorch's BatchNorm. One rule for all of them: what `set` stored wins;
//! else the environment variable, read on the first `get` and kept; else the default. A value
//! the variable's parser refuses panics with the variable's name (a typo must not silently
//! change what is measured).

use std::str::FromStr;
use std::sync::Mutex;

/// One process-wide setting; see the module docs.
pub(crate) struct Setting<T> {
    var: &'static str,
    default: T,
    value: Mutex<Option<T>>,
}

impl<T: Copy + FromStr<Err = String>> Setting<T> {
    pub(crate) const fn new(var: &'static str, default: T) -> Self {
        Self { var, default, value: Mutex::new(None) }
    }

    pub(crate) fn set(&self, value: T) {
        *self.value.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
    }

    /// # Panics
    /// If the environment variable holds a value `T` does not parse.
    pub(crate) fn get(&self) -> T {
        self.get_from(|var| std::env::var(var).ok())
    }

    /// [`Setting::get`] with `env` in place of the process environment (tests).
    fn get_from(&self, env: impl FnOnce(&str) -> Option<String>) -> T {
        let mut value = self.value.lock().unwrap_or_else(|e| e.into_inner());
        *value.get_or_insert_with(|| match env(self.var) {
            Some(v) => v.parse().unwrap_or_else(|e| panic!("{}: {e}", self.var)),
            None => self.default,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq)]
    struct Level(u8);

    impl FromStr for Level {
        type Err = String;
        fn from_str(s: &str) -> Result<Self, String> {
            s.parse().map(Level).map_err(|_| format!("`{s}` is not a level"))
        }
    }

    /// An environment with `var` = `value` only.
    fn env(value: &'static str) -> impl Fn(&str) -> Option<String> {
        move |var| (var == "VSR_TEST_SETTING").then(|| value.to_string())
    }

    #[test]
    fn set_wins_over_the_environment_and_the_default() {
        let s: Setting<Level> = Setting::new("VSR_TEST_SETTING", Level(1));
        assert_eq!(s.get_from(env("7")), Level(7), "the environment over the default");
        assert_eq!(s.get_from(env("8")), Level(7), "read once");
        s.set(Level(3));
        assert_eq!(s.get_from(env("9")), Level(3), "set over the environment");
        let d: Setting<Level> = Setting::new("VSR_TEST_SETTING_UNSET", Level(2));
        assert_eq!(d.get_from(env("7")), Level(2), "the default without the variable");
    }

    #[test]
    #[should_panic(expected = "VSR_TEST_SETTING: `x` is not a level")]
    fn a_bad_value_names_the_variable() {
        let s: Setting<Level> = Setting::new("VSR_TEST_SETTING", Level(1));
        s.get_from(env("x"));
    }
}
