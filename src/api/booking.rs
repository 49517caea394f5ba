//! Validation of a booking request: every field checked, one message per field, unknown fields
//! refused. Opening hours: Tuesday to Saturday, fittings at 10, 11, 12, 13, 16, 17 and 18 h;
//! bookings from today up to a year ahead (dates in UTC).

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use time::{Date, Duration, OffsetDateTime, Weekday};

/// Fitting start times.
pub const SLOTS: [&str; 7] = ["10:00", "11:00", "12:00", "13:00", "16:00", "17:00", "18:00"];
const FIELDS: [&str; 7] = ["name", "email", "phone", "date", "slot", "dress_id", "notes"];

/// A booking that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Booking {
    pub name: String,
    pub email: String,
    pub phone: String,
    pub date: String,
    pub slot: String,
    pub dress_id: Option<i64>,
    pub notes: Option<String>,
}

/// Field name → message.
pub type FieldErrors = BTreeMap<String, String>;

/// Checks a booking against the rules, as of `now`. `dress_exists` answers for `dress_id`.
pub fn validate(
    body: &Map<String, Value>,
    now: OffsetDateTime,
    dress_exists: impl Fn(i64) -> bool,
) -> Result<Booking, FieldErrors> {
    let mut errors = FieldErrors::new();
    for key in body.keys() {
        if !FIELDS.contains(&key.as_str()) {
            errors.insert(key.clone(), "is not a known field".into());
        }
    }
    let mut text = |key: &str, max: usize, required: bool| match text_field(body.get(key), max, required) {
        Ok(v) => v,
        Err(e) => {
            errors.insert(key.into(), e);
            None
        }
    };
    let name = text("name", 100, true);
    let email = text("email", 254, true);
    let phone = text("phone", 32, true);
    let date = text("date", 10, true);
    let slot = text("slot", 5, true);
    let notes = text("notes", 1000, false);

    if let Some(e) = &email
        && !valid_email(e)
    {
        errors.insert("email".into(), "is not a valid email address".into());
    }
    if let Some(p) = &phone
        && !valid_phone(p)
    {
        errors.insert(
            "phone".into(),
            "must be a phone number: at least 6 digits, with only spaces, +, -, ( ) and dots".into(),
        );
    }
    let day = match date.as_deref().map(|d| fitting_day(d, now.date())) {
        Some(Err(e)) => {
            errors.insert("date".into(), e.into());
            None
        }
        Some(Ok(d)) => Some(d),
        None => None,
    };
    if let Some(s) = &slot
        && let Err(e) = fitting_slot(s, day == Some(now.date()), now.hour())
    {
        errors.insert("slot".into(), e);
    }
    let dress_id = match dress(body.get("dress_id"), dress_exists) {
        Ok(id) => id,
        Err(e) => {
            errors.insert("dress_id".into(), e.into());
            None
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    match (name, email, phone, date, slot) {
        (Some(name), Some(email), Some(phone), Some(date), Some(slot)) => Ok(Booking {
            name,
            email,
            phone,
            date,
            slot,
            dress_id,
            notes,
        }),
        _ => Err(errors),
    }
}

/// A text field, trimmed: `None` when absent (or empty and optional), else what is wrong.
fn text_field(value: Option<&Value>, max: usize, required: bool) -> Result<Option<String>, String> {
    match value {
        None | Some(Value::Null) if required => Err("is required".into()),
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            let s = s.trim();
            if s.is_empty() && required {
                Err("is required".into())
            } else if s.chars().count() > max {
                Err(format!("must be at most {max} characters"))
            } else if s.chars().any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t') {
                Err("must not contain control characters".into())
            } else if s.is_empty() {
                Ok(None)
            } else {
                Ok(Some(s.to_string()))
            }
        }
        Some(_) => Err("must be a string".into()),
    }
}

/// The day of a fitting: a date from today to a year ahead, on a day the salon is open.
fn fitting_day(text: &str, today: Date) -> Result<Date, &'static str> {
    match parse_date(text) {
        None => Err("must be a date as YYYY-MM-DD"),
        Some(d) if d < today => Err("is in the past"),
        Some(d) if d > today + Duration::days(365) => Err("must be within a year from today"),
        Some(d) if matches!(d.weekday(), Weekday::Sunday | Weekday::Monday) => {
            Err("falls on a Sunday or Monday, when the salon is closed")
        }
        Some(d) => Ok(d),
    }
}

/// A fitting time of the salon's, not already started when the fitting is today.
fn fitting_slot(slot: &str, today: bool, hour_now: u8) -> Result<(), String> {
    if !SLOTS.contains(&slot) {
        return Err(format!("must be one of the fitting times: {}", SLOTS.join(", ")));
    }
    let hour: u8 = slot[..2].parse().unwrap_or(0);
    if today && hour <= hour_now {
        return Err("has already started today".into());
    }
    Ok(())
}

/// The optional dress: a positive id of a dress in the catalog.
fn dress(value: Option<&Value>, dress_exists: impl Fn(i64) -> bool) -> Result<Option<i64>, &'static str> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(id) if id > 0 && dress_exists(id) => Ok(Some(id)),
            Some(id) if id > 0 => Err("is not a dress in the catalog"),
            _ => Err("must be a positive whole number"),
        },
        Some(_) => Err("must be a number"),
    }
}

fn parse_date(s: &str) -> Option<Date> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    (s.len() == 10).then(|| Date::parse(s, &fmt).ok()).flatten()
}

fn valid_email(e: &str) -> bool {
    let Some((local, domain)) = e.rsplit_once('@') else {
        return false;
    };
    let ok_char = |c: char| c.is_ascii_graphic() || !c.is_ascii();
    !local.is_empty()
        && local.len() <= 64
        && !local.contains('@')
        && local.chars().all(ok_char)
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && domain.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '.')
}

fn valid_phone(p: &str) -> bool {
    let digits = p.chars().filter(char::is_ascii_digit).count();
    digits >= 6 && p.chars().all(|c| c.is_ascii_digit() || " +-().".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // a Wednesday, 09:30 UTC
    fn now() -> OffsetDateTime {
        time::macros::datetime!(2026-12-02 09:30 UTC)
    }

    fn check(v: Value) -> Result<Booking, FieldErrors> {
        validate(v.as_object().unwrap(), now(), |id| id <= 31)
    }

    fn good() -> Value {
        json!({"name": "Lucía Pérez", "email": "lucia@example.com", "phone": "+34 600 123 456",
               "date": "2026-12-04", "slot": "11:00", "dress_id": 3, "notes": "Size 38"})
    }

    fn error_for(mut v: Value, key: &str, value: Value) -> String {
        v[key] = value;
        check(v).unwrap_err().remove(key).unwrap_or_default()
    }

    #[test]
    fn a_good_booking_passes() {
        let b = check(good()).unwrap();
        assert_eq!(b.slot, "11:00");
        assert_eq!(b.dress_id, Some(3));
        let mut minimal = good();
        minimal.as_object_mut().unwrap().remove("dress_id");
        minimal.as_object_mut().unwrap().remove("notes");
        assert!(check(minimal).is_ok());
    }

    #[test]
    fn every_rule_has_its_message() {
        assert_eq!(error_for(good(), "name", json!("")), "is required");
        assert_eq!(
            error_for(good(), "name", json!("x".repeat(101))),
            "must be at most 100 characters"
        );
        assert_eq!(error_for(good(), "name", json!(5)), "must be a string");
        assert_eq!(
            error_for(good(), "email", json!("not-an-email")),
            "is not a valid email address"
        );
        assert_eq!(error_for(good(), "email", json!("a@b")), "is not a valid email address");
        assert!(error_for(good(), "phone", json!("12ab")).starts_with("must be a phone number"));
        assert_eq!(
            error_for(good(), "date", json!("04/12/2026")),
            "must be a date as YYYY-MM-DD"
        );
        assert_eq!(error_for(good(), "date", json!("2026-12-01")), "is in the past");
        assert_eq!(
            error_for(good(), "date", json!("2028-01-05")),
            "must be within a year from today"
        );
        assert!(error_for(good(), "date", json!("2026-12-06")).contains("Sunday or Monday"));
        assert!(error_for(good(), "date", json!("2026-12-07")).contains("Sunday or Monday"));
        assert!(error_for(good(), "slot", json!("15:00")).starts_with("must be one of the fitting times"));
        assert!(error_for(good(), "slot", json!("9:00")).starts_with("must be one of the fitting times"));
        // at 09:30, today's 10:00 is still ahead
        let mut today = good();
        today["date"] = json!("2026-12-02");
        today["slot"] = json!("10:00");
        assert!(check(today).is_ok());
        assert_eq!(
            error_for(good(), "dress_id", json!(99)),
            "is not a dress in the catalog"
        );
        assert_eq!(error_for(good(), "dress_id", json!("3")), "must be a number");
        assert_eq!(
            error_for(good(), "dress_id", json!(-1)),
            "must be a positive whole number"
        );
        assert_eq!(
            error_for(good(), "notes", json!("n".repeat(1001))),
            "must be at most 1000 characters"
        );
        assert_eq!(error_for(good(), "extra", json!(1)), "is not a known field");
    }

    #[test]
    fn several_problems_are_reported_together() {
        let e = check(json!({"name": "", "email": "x", "phone": "1", "date": "", "slot": ""})).unwrap_err();
        assert_eq!(e.len(), 5, "{e:?}");
    }

    #[test]
    fn slots_already_started_today_are_refused() {
        let mut v = good();
        v["date"] = json!("2026-12-02");
        v["slot"] = json!("10:00");
        let at_ten = time::macros::datetime!(2026-12-02 10:05 UTC);
        let e = validate(v.as_object().unwrap(), at_ten, |_| true).unwrap_err();
        assert_eq!(e["slot"], "has already started today");
    }
}
