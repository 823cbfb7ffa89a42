//! dbt selectors: any text parses or is refused with an error, never a
//! panic; what parses prints back to the same expression.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let values: Vec<String> = text.split('\n').map(str::to_owned).collect();
    if let Ok(e) = weir_select::parse(&values) {
        let again = weir_select::parse(&[e.to_string()]).expect("a printed selector parses");
        assert_eq!(again, e, "printed as `{e}`");
    }
});
