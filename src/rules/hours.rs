//! Business hours: `hours = { tz, days, periods, holidays }`, decided on the local time of
//! the event's arrival in the rule's time zone.
//!
//! A period is `HH:MM-HH:MM`, start included and end excluded; `24:00` ends at midnight.
//! A period whose end is before its start wraps past midnight and belongs to the day it
//! starts on: `22:00-06:00` on `fri` holds from Friday 22:00 to Saturday 06:00, and a
//! holiday on that Friday closes the whole night. Empty `days` means every day; empty
//! `periods` means the whole day. Holidays are always closed.

use std::collections::BTreeSet;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc, Weekday};
use chrono_tz::Tz;

use super::model::Hours;
use crate::error::FieldError;

const MINUTES_PER_DAY: u32 = 24 * 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Period {
    start: u32,
    end: u32,
}

impl Period {
    fn wraps(self) -> bool {
        self.end < self.start
    }
}

/// A validated `hours` value, ready to decide.
#[derive(Debug, Clone, PartialEq)]
pub struct OpeningHours {
    tz: Tz,
    days: [bool; 7],
    periods: Vec<Period>,
    holidays: BTreeSet<NaiveDate>,
}

/// Whether a moment falls inside the hours, with a readable reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoursDecision {
    pub open: bool,
    pub detail: String,
}

impl OpeningHours {
    /// Parses `hours`, naming every invalid field under `path` (`when.hours.periods[1]`).
    pub fn parse(hours: &Hours, path: &str) -> Result<OpeningHours, Vec<FieldError>> {
        let mut errors = Vec::new();
        let tz = Tz::from_str(&hours.tz)
            .map_err(|_| {
                errors.push(FieldError::new(
                    format!("{path}.tz"),
                    format!(
                        "unknown time zone \"{}\"; use an IANA name such as \"America/Sao_Paulo\"",
                        hours.tz
                    ),
                ))
            })
            .ok();
        let mut days = [hours.days.is_empty(); 7];
        for (i, day) in hours.days.iter().enumerate() {
            match parse_day(day) {
                Some(weekday) => days[weekday.num_days_from_monday() as usize] = true,
                None => errors.push(FieldError::new(
                    format!("{path}.days[{i}]"),
                    format!("unknown day \"{day}\"; use mon, tue, wed, thu, fri, sat or sun"),
                )),
            }
        }
        let mut periods = Vec::new();
        for (i, period) in hours.periods.iter().enumerate() {
            match parse_period(period) {
                Ok(p) => periods.push(p),
                Err(message) => {
                    errors.push(FieldError::new(format!("{path}.periods[{i}]"), message))
                }
            }
        }
        let mut holidays = BTreeSet::new();
        for (i, date) in hours.holidays.iter().enumerate() {
            match NaiveDate::parse_from_str(date, "%Y-%m-%d") {
                Ok(d) => {
                    holidays.insert(d);
                }
                Err(_) => errors.push(FieldError::new(
                    format!("{path}.holidays[{i}]"),
                    format!("invalid date \"{date}\"; use YYYY-MM-DD"),
                )),
            }
        }
        match tz {
            Some(tz) if errors.is_empty() => Ok(OpeningHours {
                tz,
                days,
                periods,
                holidays,
            }),
            _ => Err(errors),
        }
    }

    pub fn decide(&self, at: DateTime<Utc>) -> HoursDecision {
        let local = at.with_timezone(&self.tz);
        let date = local.date_naive();
        let minute = local.hour() * 60 + local.minute();
        let when = format!(
            "{} {} {:02}:{:02} {}",
            day_name(date.weekday()),
            date,
            local.hour(),
            local.minute(),
            self.tz.name()
        );
        let open = self.is_open(date, minute);
        let reason = if self.holidays.contains(&date) {
            "holiday, closed"
        } else if open {
            "open"
        } else {
            "closed"
        };
        HoursDecision {
            open,
            detail: format!("{when}: {reason}"),
        }
    }

    fn is_open(&self, date: NaiveDate, minute: u32) -> bool {
        let yesterday = date.pred_opt();
        if self.periods.is_empty() {
            return self.day_open(date);
        }
        self.periods.iter().any(|p| {
            if !p.wraps() {
                self.day_open(date) && p.start <= minute && minute < p.end
            } else {
                (self.day_open(date) && minute >= p.start)
                    || (yesterday.is_some_and(|y| self.day_open(y)) && minute < p.end)
            }
        })
    }

    fn day_open(&self, date: NaiveDate) -> bool {
        self.days[date.weekday().num_days_from_monday() as usize] && !self.holidays.contains(&date)
    }
}

fn parse_day(day: &str) -> Option<Weekday> {
    let weekday = match day.to_ascii_lowercase().as_str() {
        "mon" => Weekday::Mon,
        "tue" => Weekday::Tue,
        "wed" => Weekday::Wed,
        "thu" => Weekday::Thu,
        "fri" => Weekday::Fri,
        "sat" => Weekday::Sat,
        "sun" => Weekday::Sun,
        _ => return None,
    };
    Some(weekday)
}

fn day_name(day: Weekday) -> &'static str {
    ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][day.num_days_from_monday() as usize]
}

fn parse_period(period: &str) -> Result<Period, String> {
    let invalid =
        || format!("invalid period \"{period}\"; use HH:MM-HH:MM, such as \"08:00-12:00\"");
    let (start, end) = period.split_once('-').ok_or_else(invalid)?;
    let start = parse_minute(start.trim())
        .filter(|m| *m < MINUTES_PER_DAY)
        .ok_or_else(invalid)?;
    let end = parse_minute(end.trim()).ok_or_else(invalid)?;
    if start == end {
        return Err(format!(
            "period \"{period}\" is empty: its start equals its end"
        ));
    }
    // `24:00` stays 1440, after every start, so a period ending at midnight never wraps.
    Ok(Period { start, end })
}

/// `HH:MM` as minutes since midnight, `24:00` included.
fn parse_minute(text: &str) -> Option<u32> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    match (h, m) {
        (24, 0) => Some(MINUTES_PER_DAY),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hours(tz: &str, days: &[&str], periods: &[&str], holidays: &[&str]) -> OpeningHours {
        let strings = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect();
        OpeningHours::parse(
            &Hours {
                tz: tz.into(),
                days: strings(days),
                periods: strings(periods),
                holidays: strings(holidays),
            },
            "when.hours",
        )
        .unwrap()
    }

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn weekdays_business() -> OpeningHours {
        hours(
            "America/Sao_Paulo",
            &["mon", "tue", "wed", "thu", "fri"],
            &["08:00-12:00", "13:00-18:00"],
            &["2026-12-25"],
        )
    }

    #[test]
    fn periods_and_days_in_local_time() {
        let h = weekdays_business();
        // São Paulo is UTC-3: Monday 2026-03-02 11:59 local is 14:59 UTC.
        assert!(h.decide(at("2026-03-02T14:59:00Z")).open);
        assert!(!h.decide(at("2026-03-02T15:00:00Z")).open, "lunch break");
        assert!(h.decide(at("2026-03-02T16:00:00Z")).open);
        assert!(
            !h.decide(at("2026-03-02T21:00:00Z")).open,
            "18:00 is closed"
        );
        assert!(!h.decide(at("2026-03-07T14:00:00Z")).open, "saturday");
        // 01:00 UTC Tuesday is still Monday 22:00 in São Paulo.
        let decision = h.decide(at("2026-03-03T01:00:00Z"));
        assert!(!decision.open);
        assert_eq!(
            decision.detail,
            "mon 2026-03-02 22:00 America/Sao_Paulo: closed"
        );
    }

    #[test]
    fn holidays_are_closed() {
        let h = weekdays_business();
        let decision = h.decide(at("2026-12-25T14:00:00Z"));
        assert!(!decision.open);
        assert!(decision.detail.contains("holiday"), "{}", decision.detail);
        assert!(h.decide(at("2026-12-24T14:00:00Z")).open);
    }

    #[test]
    fn wrapping_periods_belong_to_their_start_day() {
        let h = hours("UTC", &["fri"], &["22:00-06:00"], &[]);
        assert!(h.decide(at("2026-03-06T23:00:00Z")).open, "friday night");
        assert!(
            h.decide(at("2026-03-07T05:59:00Z")).open,
            "saturday early, from friday"
        );
        assert!(!h.decide(at("2026-03-07T06:00:00Z")).open);
        assert!(!h.decide(at("2026-03-07T23:00:00Z")).open, "saturday night");
        assert!(
            !h.decide(at("2026-03-06T03:00:00Z")).open,
            "friday early belongs to thursday"
        );
        let with_holiday = hours("UTC", &["fri"], &["22:00-06:00"], &["2026-03-06"]);
        assert!(!with_holiday.decide(at("2026-03-07T02:00:00Z")).open);
    }

    #[test]
    fn whole_days_and_midnight_end() {
        let all_day = hours("UTC", &[], &["00:00-24:00"], &[]);
        assert!(all_day.decide(at("2026-03-07T00:00:00Z")).open);
        assert!(all_day.decide(at("2026-03-07T23:59:00Z")).open);
        let h = hours("UTC", &[], &["18:00-24:00"], &[]);
        assert!(h.decide(at("2026-03-07T23:59:00Z")).open);
        assert!(!h.decide(at("2026-03-07T00:30:00Z")).open);
        let every_day = hours("UTC", &["sat", "SUN"], &[], &[]);
        assert!(every_day.decide(at("2026-03-08T03:00:00Z")).open);
        assert!(!every_day.decide(at("2026-03-09T03:00:00Z")).open);
    }

    #[test]
    fn daylight_saving_time_moves_the_utc_window() {
        let h = hours("Europe/Lisbon", &[], &["09:00-10:00"], &[]);
        // Winter: Lisbon is UTC+0; summer (from 2026-03-29): UTC+1.
        assert!(h.decide(at("2026-03-27T09:30:00Z")).open);
        assert!(!h.decide(at("2026-03-30T09:30:00Z")).open);
        assert!(h.decide(at("2026-03-30T08:30:00Z")).open);
    }

    #[test]
    fn reports_every_invalid_field() {
        let errors = OpeningHours::parse(
            &Hours {
                tz: "Mars/Olympus".into(),
                days: vec!["mon".into(), "monday".into()],
                periods: vec![
                    "08:00-12:00".into(),
                    "25:00-26:00".into(),
                    "10:00-10:00".into(),
                ],
                holidays: vec!["2026-02-30".into()],
            },
            "when.outside_hours",
        )
        .unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "when.outside_hours.tz",
                "when.outside_hours.days[1]",
                "when.outside_hours.periods[1]",
                "when.outside_hours.periods[2]",
                "when.outside_hours.holidays[0]",
            ]
        );
    }
}
