//! Drawing: the state of `app` and the counts of `model` onto a ratatui
//! frame. Thin on purpose: what a row says is decided in `model`.

use ratatui::{
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Cell, Clear, Paragraph, Row as TableRow, Table, TableState, Wrap},
    Frame,
};

use super::{
    app::{App, Screen, KEYS},
    model::{attempt_line, rate_cell, sparkline, Model, Sort},
};

/// Width from which the table shows the error column and whole paths.
pub const WIDE: u16 = 120;

/// What the header says about the source of the data.
pub struct Status {
    /// "live" or "replay FILE".
    pub source: String,
    /// The time the rows are computed at (the replay clock).
    pub now: f64,
    /// Replay speed, for a replay.
    pub speed: Option<f64>,
    /// The recording has been read to its end.
    pub ended: bool,
    pub color: bool,
    /// Show the domain column (--dns, or domains in the recording).
    pub domains: bool,
}

fn style(color: bool, c: Color) -> Style {
    if color {
        Style::default().fg(c)
    } else {
        Style::default()
    }
}

pub fn draw(f: &mut Frame, app: &mut App, model: &Model, st: &Status) {
    let area = f.area();
    let [head, status, body, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(area);
    f.render_widget(Paragraph::new(header(app, st)), head);
    f.render_widget(Paragraph::new(status_line(app, model)), status);
    app.page = body.height.saturating_sub(2).max(1) as usize;
    match app.screen.clone() {
        Screen::Table => table(f, app, st, body),
        Screen::Attempts { key } => attempts(f, app, model, &key, body),
        Screen::Event { key, index } => event(f, app, model, &key, index, body),
    }
    let hint = if app.editing {
        format!("filter: {}_   (Enter keep, Esc clear)", app.spec.filter)
    } else {
        "q quit  / filter  Tab group  ⇧D/N/A/F/P/T sort  ⏎ open  ␣ pause  ? help".to_string()
    };
    f.render_widget(
        Paragraph::new(hint).style(Style::default().add_modifier(Modifier::REVERSED)),
        foot,
    );
    if app.help {
        help(f, body);
    }
}

fn clock(ts: f64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(ts.max(0.0));
    let s = humantime::format_rfc3339_seconds(t).to_string();
    s.get(11..19).unwrap_or(&s).to_string()
}

fn header(app: &App, st: &Status) -> Line<'static> {
    let sort = match app.spec.sort {
        Sort::Failing => "failing",
        Sort::Name => "name",
        Sort::Attempts => "att/s",
        Sort::Failures => "fail/s",
        Sort::Percent => "fail%",
        Sort::Recent => "last seen",
    };
    let arrow = if app.spec.reverse { "↑" } else { "↓" };
    let mut text = format!(
        "tracer top · {} {}Z · by {} · sort {sort}{arrow}",
        st.source,
        clock(st.now),
        app.spec.grouping.title()
    );
    if let Some(speed) = st.speed {
        text.push_str(&format!(" · ×{speed}"));
    }
    if st.ended {
        text.push_str(" · end");
    }
    if !app.spec.filter.is_empty() && !app.editing {
        text.push_str(&format!(" · /{}", app.spec.filter));
    }
    let mut spans = vec![Span::styled(
        text,
        Style::default().add_modifier(Modifier::BOLD),
    )];
    if app.paused {
        spans.push(Span::styled(
            " PAUSED",
            style(st.color, Color::Yellow).add_modifier(Modifier::BOLD),
        ));
    }
    Line::from(spans)
}

fn status_line(app: &App, model: &Model) -> String {
    let l = &model.lost;
    let mut s = format!(
        "{} attempts · {} groups · lost {} (kernel {}, not handed to the view {})",
        model.attempts,
        model.group_count(app.spec.grouping),
        l.total + l.unwritten,
        l.total,
        l.unwritten
    );
    if model.unreadable > 0 {
        s.push_str(&format!(" · {} unreadable lines", model.unreadable));
    }
    s
}

fn table(f: &mut Frame, app: &mut App, st: &Status, area: Rect) {
    let wide = area.width >= WIDE;
    // Fixed columns, then what is left shared by the name and the proxy.
    let spark = if wide { 20 } else { 10 };
    let mut fixed = vec![6u16, 6, 5, spark, 9];
    if wide {
        // "ECONNREFUSED connection refused" whole.
        fixed.push(32);
    }
    let domains = st.domains && wide;
    if domains {
        fixed.push(24);
    }
    let used: u16 = fixed.iter().sum::<u16>() + fixed.len() as u16 + 1;
    let rest = area.width.saturating_sub(used);
    let name_w = if wide { rest / 3 } else { rest / 2 }.max(8);
    let proxy_w = rest.saturating_sub(name_w);
    let mut widths = vec![Constraint::Length(name_w)];
    widths.extend(fixed.iter().map(|&w| Constraint::Length(w)));
    widths.push(Constraint::Length(proxy_w));

    let mut titles = vec![
        app.spec.grouping.title(),
        "ATT/S",
        "FAIL/S",
        "FAIL%",
        "LAST MIN",
        "LAST",
    ];
    if wide {
        titles.push("ERROR");
    }
    if domains {
        titles.push("DOMAIN");
    }
    titles.push("PROXY");
    let head = TableRow::new(titles.into_iter().map(Cell::from))
        .style(Style::default().add_modifier(Modifier::BOLD | Modifier::UNDERLINED));
    let rows = app.rows.iter().map(|r| {
        let mut cells = vec![
            Cell::from(r.key.clone()),
            Cell::from(rate_cell(r.attempts_per_s)),
            Cell::from(rate_cell(r.failures_per_s)),
            Cell::from(r.fail_percent.map_or("-".into(), |p| format!("{p:.0}%"))),
            Cell::from(sparkline(&r.failures, spark as usize)),
            Cell::from(r.last_result.clone()),
        ];
        if wide {
            cells.push(Cell::from(r.last_error.clone()));
        }
        if domains {
            cells.push(Cell::from(r.domain.clone()));
        }
        cells.push(Cell::from(r.verdict.clone()));
        let s = if r.failing {
            style(st.color, Color::Red)
        } else {
            Style::default()
        };
        TableRow::new(cells).style(s)
    });
    let t = Table::new(rows, widths)
        .header(head)
        .column_spacing(1)
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    let mut state = TableState::default().with_selected(Some(app.selected));
    f.render_stateful_widget(t, area, &mut state);
    if app.rows.is_empty() {
        let msg = if app.spec.filter.is_empty() {
            "no connect attempts yet"
        } else {
            "no row matches the filter (Esc clears it)"
        };
        let inner = Rect {
            y: area.y.saturating_add(2),
            height: 1,
            ..area
        };
        f.render_widget(Paragraph::new(msg), inner);
    }
}

fn attempts(f: &mut Frame, app: &mut App, model: &Model, key: &str, area: Rect) {
    let Some(group) = model.group(app.spec.grouping, key) else {
        f.render_widget(Paragraph::new(format!("{key}: no longer kept")), area);
        return;
    };
    let [title, list, detail] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(2),
        Constraint::Length(3),
    ])
    .areas(area);
    f.render_widget(
        Paragraph::new(format!(
            "{key}: {} attempts, {} failed; the last {} (newest first; Enter: full event, Esc: back)",
            group.total,
            group.failed,
            group.recent.len()
        ))
        .style(Style::default().add_modifier(Modifier::BOLD)),
        title,
    );
    let lines = group.recent.iter().rev().map(|a| {
        let s = if a.ok {
            Style::default()
        } else {
            style(app.color, Color::Red)
        };
        TableRow::new([Cell::from(attempt_line(a))]).style(s)
    });
    let t = Table::new(lines, [Constraint::Percentage(100)])
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    let mut state = TableState::default().with_selected(Some(app.selected));
    f.render_stateful_widget(t, list, &mut state);
    if let Some(a) = group.recent.iter().rev().nth(app.selected) {
        f.render_widget(
            Paragraph::new(a.message.clone()).wrap(Wrap { trim: false }),
            detail,
        );
    }
}

fn event(f: &mut Frame, app: &mut App, model: &Model, key: &str, index: usize, area: Rect) {
    let attempt = model
        .group(app.spec.grouping, key)
        .and_then(|g| g.recent.iter().rev().nth(index));
    let text = match attempt {
        Some(a) => serde_json::from_str::<serde_json::Value>(&a.raw)
            .and_then(|v| serde_json::to_string_pretty(&v))
            .unwrap_or_else(|_| a.raw.clone()),
        None => "this attempt is no longer kept".to_string(),
    };
    // Not wrapped: the word wrapper dropped the indented lines of the
    // pretty JSON (seen in tmux); a long value is cut at the edge instead.
    f.render_widget(Paragraph::new(text).scroll((app.scroll, 0)), area);
}

fn help(f: &mut Frame, area: Rect) {
    let h = (KEYS.len() as u16 + 2).min(area.height);
    let w = area.width.min(78);
    let r = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y,
        width: w,
        height: h,
    };
    let text: Vec<Line> = KEYS
        .iter()
        .map(|(k, what)| Line::from(format!(" {k:<34} {what}")))
        .collect();
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(text)
            .block(ratatui::widgets::Block::bordered().title(" keys (any key closes) ")),
        r,
    );
}
