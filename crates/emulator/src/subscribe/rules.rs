//! WeChat's rules for the values of a subscribe message's keys, one rule per key type, from the
//! table "订阅消息参数值内容限制说明" of the send API's documentation (`shared/platforms.md` §1.6;
//! developers.weixin.qq.com/miniprogram/dev/OpenApiDoc/mp-message-management/subscribe-message/sendMessage.html).
//!
//! The table gives each rule in one line, and leaves room; where it does, the choice made here is
//! written at the rule, and leans towards what WeChat is known to accept. Throughout:
//!
//! - Lengths count characters (Unicode scalar values): a 汉字, a letter, a digit and a symbol each
//!   count one. (The table says "字符" without defining it.)
//! - "Letters" are ASCII letters and "digits" ASCII digits: the table's 字母 and 数字.
//! - A "symbol" is the space, or any character that is not a letter or digit of any script, not
//!   white space and not a control character: ASCII and full-width punctuation, currency signs,
//!   and so on. The space counts because WeChat accepted `125 mmHg` as a `character_string`
//!   (a request on its community forum, refused only for another key).
//! - An empty value (or only white space) is refused before these rules, as "is empty".
//! - `enum` keys (values from a list WeChat keeps) are not emulated.

use serde::Serialize;
use time::{Date, Month};

/// The type of a template key: `thing` in `{{thing1.DATA}}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum KeyType {
    Thing,
    Number,
    Letter,
    Symbol,
    CharacterString,
    Time,
    Date,
    Amount,
    PhoneNumber,
    CarNumber,
    Name,
    Phrase,
}

impl KeyType {
    pub(crate) const ALL: [KeyType; 12] = [
        KeyType::Thing,
        KeyType::Number,
        KeyType::Letter,
        KeyType::Symbol,
        KeyType::CharacterString,
        KeyType::Time,
        KeyType::Date,
        KeyType::Amount,
        KeyType::PhoneNumber,
        KeyType::CarNumber,
        KeyType::Name,
        KeyType::Phrase,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            KeyType::Thing => "thing",
            KeyType::Number => "number",
            KeyType::Letter => "letter",
            KeyType::Symbol => "symbol",
            KeyType::CharacterString => "character_string",
            KeyType::Time => "time",
            KeyType::Date => "date",
            KeyType::Amount => "amount",
            KeyType::PhoneNumber => "phone_number",
            KeyType::CarNumber => "car_number",
            KeyType::Name => "name",
            KeyType::Phrase => "phrase",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<KeyType> {
        KeyType::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// Whether `value`, which is not empty, is a valid value for a key of this type.
    pub(crate) fn accepts(self, value: &str) -> bool {
        let chars: Vec<char> = value.chars().collect();
        let len = chars.len();
        match self {
            // 20个以内字符, 可汉字、数字、字母或符号组合. Spaces are allowed (WeChat's own
            // examples have them); control characters are not.
            KeyType::Thing => len <= 20 && chars.iter().all(|c| !c.is_control()),
            // 32位以内数字, 只能数字, 可带小数: digits with at most one decimal point, digits on
            // both sides of it; the 32 counts digits, not the point. No sign.
            KeyType::Number => decimal_digits(value).is_some_and(|digits| digits <= 32),
            // 32位以内字母, 只能字母.
            KeyType::Letter => len <= 32 && chars.iter().all(char::is_ascii_alphabetic),
            // 5位以内符号, 只能符号.
            KeyType::Symbol => len <= 5 && chars.iter().all(|&c| is_symbol(c)),
            // 32位以内数字、字母或符号.
            KeyType::CharacterString => {
                len <= 32
                    && chars
                        .iter()
                        .all(|&c| c.is_ascii_alphanumeric() || is_symbol(c))
            }
            KeyType::Time => moments(value, Moment::Time),
            KeyType::Date => moments(value, Moment::Date),
            KeyType::Amount => amount(value),
            // 17位以内, 数字、符号 (e.g. `+86-0766-66888866`); at least one digit.
            KeyType::PhoneNumber => {
                len <= 17
                    && chars.iter().any(char::is_ascii_digit)
                    && chars.iter().all(|&c| c.is_ascii_digit() || is_symbol(c))
            }
            KeyType::CarNumber => car_number(&chars),
            KeyType::Name => name(&chars),
            // 5个以内纯汉字 (e.g. 配送中).
            KeyType::Phrase => len <= 5 && chars.iter().all(|&c| is_han(c)),
        }
    }
}

/// A 汉字: a CJK unified ideograph (the basic block and its extensions) or a compatibility one.
fn is_han(c: char) -> bool {
    matches!(
        c as u32,
        0x3400..=0x4DBF
            | 0x4E00..=0x9FFF
            | 0xF900..=0xFAFF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2EBEF
            | 0x2F800..=0x2FA1F
            | 0x30000..=0x3134F
    )
}

fn is_symbol(c: char) -> bool {
    c == ' ' || (!c.is_alphanumeric() && !c.is_whitespace() && !c.is_control())
}

/// How many digits `text` has if it is an unsigned decimal (`12`, `12.50`), else `None`.
fn decimal_digits(text: &str) -> Option<usize> {
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || fraction.is_some_and(|f| !digits(f)) {
        return None;
    }
    Some(whole.len() + fraction.map_or(0, str::len))
}

/// Currency signs an amount may start with.
const CURRENCY_SIGNS: [char; 12] = ['¥', '￥', '$', '€', '£', '₩', '₹', '₽', '฿', '₫', '₱', '₺'];

/// 1个币种符号+10位以内纯数字, 可带小数, 结尾可带“元”: an optional currency sign (WeChat
/// accepts plain `16000`, and `100元`), up to 10 digits with an optional decimal part (the 10
/// counts every digit), and an optional 元 at the end.
fn amount(value: &str) -> bool {
    let rest = value.strip_suffix('元').unwrap_or(value);
    let rest = match rest.chars().next() {
        Some(sign) if CURRENCY_SIGNS.contains(&sign) => &rest[sign.len_utf8()..],
        _ => rest,
    };
    decimal_digits(rest).is_some_and(|digits| digits <= 10)
}

/// 8位以内, 第一位与最后一位可为汉字, 其余为字母或数字 (e.g. 粤A8Z888挂). At least one letter
/// or digit.
fn car_number(chars: &[char]) -> bool {
    let last = chars.len().saturating_sub(1);
    chars.len() <= 8
        && chars.iter().any(char::is_ascii_alphanumeric)
        && chars
            .iter()
            .enumerate()
            .all(|(i, &c)| c.is_ascii_alphanumeric() || ((i == 0 || i == last) && is_han(c)))
}

/// 10个以内纯汉字或20个以内纯字母或符号; 中文和字母混合按中文名算, 10个字内. So: with any 汉字,
/// at most 10 characters of 汉字, letters and symbols (`·`); without, at most 20 letters and
/// symbols (the space is one, so `John Smith` fits). No digits.
fn name(chars: &[char]) -> bool {
    let max = if chars.iter().any(|&c| is_han(c)) {
        10
    } else {
        20
    };
    chars.len() <= max
        && chars
            .iter()
            .all(|&c| is_han(c) || c.is_ascii_alphabetic() || is_symbol(c))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Moment {
    /// 24小时制时间格式(支持+年月日): a clock time, with a date before it or not.
    Time,
    /// 年月日格式(支持+24小时制时间): a date, with a clock time after it or not.
    Date,
}

/// `time` and `date` values: one moment, or a period of two joined by `~` (支持填时间段, 两个
/// 时间点之间用“~”符号连接). Only the ASCII `~`: WeChat refuses the full-width `～` of its own
/// doc's example. The end of a period may be a bare clock time when its start has one
/// (`2024-07-24 08:00~12:00`), for dates too.
fn moments(value: &str, kind: Moment) -> bool {
    let mut parts = value.split('~');
    let (Some(start), end, None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let Some(start_has_clock) = moment(start, kind) else {
        return false;
    };
    match end {
        None => true,
        Some(end) => moment(end, kind).is_some() || (start_has_clock && clock(end)),
    }
}

/// Whether `text` is one moment of this kind, and if so whether it has a clock time.
fn moment(text: &str, kind: Moment) -> Option<bool> {
    match text.split_once(' ') {
        Some((day, time)) => (date(day) && clock(time)).then_some(true),
        None if kind == Moment::Time => clock(text).then_some(true),
        None => date(text).then_some(false),
    }
}

/// A calendar date: `2026-12-02` or `2026年12月2日`, the month and day with or without a leading
/// zero, the year in four digits. (WeChat's doc shows the second form, and the first is what
/// most senders use; `2026/12/02` is not accepted here.)
fn date(text: &str) -> bool {
    let parts: Option<(&str, &str, &str)> = if let Some(rest) = text.strip_suffix('日') {
        rest.split_once('年')
            .and_then(|(year, rest)| rest.split_once('月').map(|(month, day)| (year, month, day)))
    } else {
        let mut split = text.split('-');
        match (split.next(), split.next(), split.next(), split.next()) {
            (Some(year), Some(month), Some(day), None) => Some((year, month, day)),
            _ => None,
        }
    };
    let Some((year, month, day)) = parts else {
        return false;
    };
    let (Some(year), Some(month), Some(day)) = (
        number_of(year, 4, 4),
        number_of(month, 1, 2),
        number_of(day, 1, 2),
    ) else {
        return false;
    };
    let Ok(month) = Month::try_from(month as u8) else {
        return false;
    };
    Date::from_calendar_date(year as i32, month, day as u8).is_ok()
}

/// A 24-hour clock time: `15:01`, `9:05`, or with seconds `15:01:30` (senders commonly add
/// seconds, and WeChat has accepted them).
fn clock(text: &str) -> bool {
    let mut split = text.split(':');
    let (Some(hour), Some(minute), second, None) =
        (split.next(), split.next(), split.next(), split.next())
    else {
        return false;
    };
    number_of(hour, 1, 2).is_some_and(|h| h <= 23)
        && number_of(minute, 2, 2).is_some_and(|m| m <= 59)
        && second.is_none_or(|s| number_of(s, 2, 2).is_some_and(|s| s <= 59))
}

/// `text` as a number, if it is `min..=max` ASCII digits.
fn number_of(text: &str, min: usize, max: usize) -> Option<u32> {
    if text.len() < min || text.len() > max || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(kind: KeyType, good: &[&str], bad: &[&str]) {
        for value in good {
            assert!(
                kind.accepts(value),
                "{} should accept {value:?}",
                kind.as_str()
            );
        }
        for value in bad {
            assert!(
                !kind.accepts(value),
                "{} should refuse {value:?}",
                kind.as_str()
            );
        }
    }

    #[test]
    fn names_round_trip() {
        for kind in KeyType::ALL {
            assert_eq!(KeyType::from_name(kind.as_str()), Some(kind));
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::json!(kind.as_str())
            );
        }
        assert_eq!(KeyType::from_name("enum"), None);
    }

    #[test]
    fn thing_is_up_to_20_characters_of_anything_printable() {
        check(
            KeyType::Thing,
            &[
                "订单已经完成,请及时查看",
                "苹果 ×5",
                "Order 123 shipped!",
                &"字".repeat(20),
                &"a".repeat(20),
            ],
            &[
                // From the community: 22 characters, refused by WeChat.
                "吉尔吉斯斯坦进口黑麦列巴(700克/条)*2",
                &"a".repeat(21),
                "tab\there",
            ],
        );
    }

    #[test]
    fn number_is_up_to_32_digits_with_an_optional_decimal_part() {
        check(
            KeyType::Number,
            &["339208499", "0.5", "12.50", &"9".repeat(32), "1.0000"],
            &[
                &"9".repeat(33),
                "-1",
                "1.",
                ".5",
                "1.2.3",
                "1e5",
                "１２",
                "12 3",
            ],
        );
    }

    #[test]
    fn letter_symbol_and_character_string() {
        check(
            KeyType::Letter,
            &["abc", "ABCxyz", &"z".repeat(32)],
            &["ab1", "a b", "é", &"z".repeat(33)],
        );
        check(
            KeyType::Symbol,
            &["+", "-*/", "!!!!!", "，。"],
            &["!!!!!!", "a", "1", "\u{3000}"],
        );
        check(
            KeyType::CharacterString,
            &[
                "SRC202407241131475140182",
                "A-1_b.2",
                "125 mmHg",
                &"x".repeat(32),
            ],
            &[&"x".repeat(33), "订单1", "a\tb"],
        );
    }

    #[test]
    fn time_needs_a_clock_time_and_date_a_date() {
        check(
            KeyType::Time,
            &[
                "15:01",
                "9:05",
                "2026-12-02 15:01",
                "2026-12-02 15:01:30",
                "2019年10月1日 15:01",
                "2008年02月08日 01:01",
                "2024-07-24 08:00~12:00",
                "2021年10月25日 09:00~09:30",
                "2026-12-02 15:01~2026-12-03 10:00",
            ],
            &[
                "2026-12-02",
                "2020年4月12日",
                ":2020年4月12日",
                "24:00",
                "15:1",
                "15:01:60",
                "2026-13-02 15:01",
                "2026-02-30 15:01",
                "2024-07-24 08~12",
                "2021年10月25日 09:00～09:30",
                "15:01~",
                "1:00~2:00~3:00",
                "1708432089530",
                "2026/12/02 15:01",
            ],
        );
        check(
            KeyType::Date,
            &[
                "2026-12-02",
                "2026-1-2",
                "2019年10月1日",
                "2019年10月1日 15:01",
                "2025-03-13~2025-03-14",
                "2026-12-02 08:00~12:00",
                "2024-02-29",
            ],
            &[
                "15:01",
                "2026-12-02~12:00",
                "2023-02-29",
                "26-12-02",
                "2026年12月",
                "2026-12-02 25:00",
                "",
            ],
        );
    }

    #[test]
    fn amount_is_up_to_10_digits_with_a_sign_or_yuan() {
        check(
            KeyType::Amount,
            &[
                "16000",
                "¥100.50",
                "￥8",
                "$3.99",
                "100元",
                "¥100元",
                "1234567890",
            ],
            &[
                "12345678901",
                "100 元",
                "¥¥100",
                "元",
                "¥",
                "-5",
                "100.",
                "一百元",
            ],
        );
    }

    #[test]
    fn phone_car_name_phrase() {
        check(
            KeyType::PhoneNumber,
            &[
                "+86-0766-66888866",
                "18888888888",
                "(0766)6688",
                "+86 13800138000",
            ],
            &["+86-0766-668888661", "call me", "+-"],
        );
        check(
            KeyType::CarNumber,
            &["粤A8Z888挂", "粤B12345", "AB1234"],
            &["粤A8Z888挂1", "粤A-12345", "粤挂", "A粤1"],
        );
        check(
            KeyType::Name,
            &[
                "张三",
                "欧阳娜娜",
                "Niya",
                "John Smith",
                "张三Tom",
                "Mary-Jane O'Neil",
                &"甲".repeat(10),
                &"a".repeat(20),
            ],
            &[
                &"甲".repeat(11),
                &"a".repeat(21),
                "张三Tommmmmmm",
                "R2D2",
                "张三3",
            ],
        );
        check(
            KeyType::Phrase,
            &["配送中", "已发货", "正常结束", "五个汉字呀"],
            &["配送中!", "六个汉字的话", "ok", "配送 中"],
        );
    }
}
