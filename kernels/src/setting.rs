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
        let mut value = self.value.lock().unwrap_or_else(|e| e.into_inner());
        *value.get_or_insert_with(|| match std::env::var(self.var) {
            Ok(v) => v.parse().unwrap_or_else(|e| panic!("{}: {e}", self.var)),
            Err(_) => self.default,
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

    #[test]
    fn set_wins_over_the_environment_and_the_default() {
        // (a variable no other test reads)
        static S: Setting<Level> = Setting::new("VSR_TEST_SETTING_LEVEL", Level(1));
        // SAFETY: no other thread reads this variable.
        unsafe { std::env::set_var("VSR_TEST_SETTING_LEVEL", "7") };
        assert_eq!(S.get(), Level(7), "the environment over the default");
        unsafe { std::env::set_var("VSR_TEST_SETTING_LEVEL", "8") };
        assert_eq!(S.get(), Level(7), "read once");
        S.set(Level(3));
        assert_eq!(S.get(), Level(3), "set over the environment");
        static D: Setting<Level> = Setting::new("VSR_TEST_SETTING_UNSET", Level(2));
        assert_eq!(D.get(), Level(2));
    }

    #[test]
    #[should_panic(expected = "VSR_TEST_SETTING_BAD: `x` is not a level")]
    fn a_bad_value_names_the_variable() {
        static S: Setting<Level> = Setting::new("VSR_TEST_SETTING_BAD", Level(1));
        // SAFETY: no other thread reads this variable.
        unsafe { std::env::set_var("VSR_TEST_SETTING_BAD", "x") };
        S.get();
    }
}
