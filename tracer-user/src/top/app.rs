//! The screen's state and what each key does. No terminal here: keys come
//! in as crossterm events, and the state says what to draw.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::model::{Grouping, Model, Row, Sort, ViewSpec};

/// Which screen is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Screen {
    /// One row per group.
    Table,
    /// The recent attempts of one group (newest first).
    Attempts { key: String },
    /// The full record of one attempt, scrolled by `scroll` lines.
    Event { key: String, index: usize },
}

/// What a key asks of the loop around the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    None,
    Quit,
    /// Replay: move the clock one second (while paused).
    Step,
    /// Replay: play to the end of the recording.
    ToEnd,
    Faster,
    Slower,
}

/// The keys, for the help screen and the notes.
pub const KEYS: &[(&str, &str)] = &[
    ("q, Ctrl-C", "quit (the terminal is restored)"),
    ("Up/Down, j/k, PgUp/PgDn, Home/End", "move"),
    (
        "Enter",
        "open the row: its recent attempts; again: the full event",
    ),
    ("Esc, Backspace", "back; in the table, clear the filter"),
    ("/", "filter by any text (Enter keeps it, Esc clears it)"),
    ("Tab, 1-4", "group by unit/pod, process, destination, proxy"),
    ("Shift-D", "sort: failing rows first (the default)"),
    ("Shift-N", "sort by name"),
    ("Shift-A", "sort by attempts/s"),
    ("Shift-F", "sort by failures/s"),
    ("Shift-P", "sort by failure %"),
    ("Shift-T", "sort by last seen"),
    ("(the same sort key again)", "reverse the order"),
    ("Space", "pause / resume"),
    (". or Right", "step one second (paused replay)"),
    ("+ / -", "replay faster / slower"),
    ("e", "replay to the end of the recording"),
    ("?", "this help"),
];

#[derive(Debug)]
pub struct App {
    pub spec: ViewSpec,
    pub screen: Screen,
    /// Selected row (table) or attempt (drill-down).
    pub selected: usize,
    /// Scroll of the full event.
    pub scroll: u16,
    /// Typing a filter.
    pub editing: bool,
    pub paused: bool,
    pub help: bool,
    /// Rows of the table, as last computed.
    pub rows: Vec<Row>,
    /// Visible table lines, for PgUp/PgDn.
    pub page: usize,
    /// Colours allowed (a terminal, no NO_COLOR).
    pub color: bool,
}

impl App {
    pub fn new(grouping: Grouping) -> Self {
        Self {
            spec: ViewSpec {
                grouping,
                ..ViewSpec::default()
            },
            screen: Screen::Table,
            selected: 0,
            scroll: 0,
            editing: false,
            paused: false,
            help: false,
            rows: Vec::new(),
            page: 10,
            color: false,
        }
    }

    /// Recompute the rows; the selection follows its group when it moved.
    pub fn refresh(&mut self, model: &Model, now: f64, full: bool) {
        let key = self.rows.get(self.selected).map(|r| r.key.clone());
        self.rows = model.rows(&self.spec, now, full);
        if let (Screen::Table, Some(key)) = (&self.screen, key) {
            if let Some(i) = self.rows.iter().position(|r| r.key == key) {
                self.selected = i;
            }
        }
        if self.screen == Screen::Table {
            self.selected = self.selected.min(self.rows.len().saturating_sub(1));
        }
    }

    /// Number of lines of the current list.
    fn len(&self, model: &Model) -> usize {
        match &self.screen {
            Screen::Table => self.rows.len(),
            Screen::Attempts { key } => model
                .group(self.spec.grouping, key)
                .map_or(0, |g| g.recent.len()),
            Screen::Event { .. } => usize::MAX,
        }
    }

    pub fn key(&mut self, k: KeyEvent, model: &Model) -> Action {
        let ctrl_c = k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl_c {
            return Action::Quit;
        }
        if self.editing {
            match k.code {
                KeyCode::Enter => self.editing = false,
                KeyCode::Esc => {
                    self.editing = false;
                    self.spec.filter.clear();
                }
                KeyCode::Backspace => {
                    self.spec.filter.pop();
                }
                // Bounded: a filter is a few words.
                KeyCode::Char(c) if self.spec.filter.len() < 64 => self.spec.filter.push(c),
                _ => {}
            }
            self.selected = 0;
            return Action::None;
        }
        if self.help {
            self.help = false;
            return Action::None;
        }
        let len = self.len(model);
        let last = len.saturating_sub(1);
        match k.code {
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Char('?') => self.help = true,
            KeyCode::Char(' ') => self.paused = !self.paused,
            KeyCode::Char('.') | KeyCode::Right => return Action::Step,
            KeyCode::Char('+') => return Action::Faster,
            KeyCode::Char('-') => return Action::Slower,
            KeyCode::Char('e') => return Action::ToEnd,
            KeyCode::Up | KeyCode::Char('k') => self.up(1),
            KeyCode::Down | KeyCode::Char('j') => self.down(1, last),
            KeyCode::PageUp => self.up(self.page),
            KeyCode::PageDown => self.down(self.page, last),
            KeyCode::Home => {
                self.selected = 0;
                self.scroll = 0;
            }
            KeyCode::End if !matches!(self.screen, Screen::Event { .. }) => self.selected = last,
            KeyCode::Enter => self.open(model),
            KeyCode::Esc | KeyCode::Backspace | KeyCode::Left => self.back(),
            _ if self.screen == Screen::Table => self.table_key(k.code),
            _ => {}
        }
        Action::None
    }

    fn table_key(&mut self, code: KeyCode) {
        let sort = match code {
            KeyCode::Char('/') => {
                self.editing = true;
                self.spec.filter.clear();
                return;
            }
            KeyCode::Tab => {
                self.spec.grouping = self.spec.grouping.next();
                self.selected = 0;
                return;
            }
            KeyCode::Char(c @ '1'..='4') => {
                let i = (c as usize) - ('1' as usize);
                if let Some(&g) = Grouping::ALL.get(i) {
                    self.spec.grouping = g;
                    self.selected = 0;
                }
                return;
            }
            KeyCode::Char('D') => Sort::Failing,
            KeyCode::Char('N') => Sort::Name,
            KeyCode::Char('A') => Sort::Attempts,
            KeyCode::Char('F') => Sort::Failures,
            KeyCode::Char('P') => Sort::Percent,
            KeyCode::Char('T') => Sort::Recent,
            _ => return,
        };
        self.spec.sort_by(sort);
    }

    fn up(&mut self, n: usize) {
        if let Screen::Event { .. } = self.screen {
            self.scroll = self.scroll.saturating_sub(n as u16);
        } else {
            self.selected = self.selected.saturating_sub(n);
        }
    }

    fn down(&mut self, n: usize, last: usize) {
        if let Screen::Event { .. } = self.screen {
            self.scroll = self.scroll.saturating_add(n as u16);
        } else {
            self.selected = (self.selected + n).min(last);
        }
    }

    fn open(&mut self, model: &Model) {
        match &self.screen {
            Screen::Table => {
                if let Some(row) = self.rows.get(self.selected) {
                    self.screen = Screen::Attempts {
                        key: row.key.clone(),
                    };
                    self.selected = 0;
                }
            }
            Screen::Attempts { key } => {
                let has = model
                    .group(self.spec.grouping, key)
                    .is_some_and(|g| self.selected < g.recent.len());
                if has {
                    self.screen = Screen::Event {
                        key: key.clone(),
                        index: self.selected,
                    };
                    self.scroll = 0;
                }
            }
            Screen::Event { .. } => {}
        }
    }

    fn back(&mut self) {
        match &self.screen {
            Screen::Table => self.spec.filter.clear(),
            Screen::Attempts { key } => {
                let key = key.clone();
                self.screen = Screen::Table;
                self.selected = self.rows.iter().position(|r| r.key == key).unwrap_or(0);
            }
            Screen::Event { key, index } => {
                self.selected = *index;
                self.screen = Screen::Attempts { key: key.clone() };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(app: &mut App, model: &Model, code: KeyCode) -> Action {
        let mods = match code {
            KeyCode::Char(c) if c.is_ascii_uppercase() => KeyModifiers::SHIFT,
            _ => KeyModifiers::NONE,
        };
        app.key(KeyEvent::new(code, mods), model)
    }

    fn model() -> Model {
        let mut m = Model::default();
        for (unit, outcome) in [("a.service", "success"), ("b.service", "failure")] {
            m.ingest_line(&format!(
                r#"{{"@timestamp":"2025-01-01T00:00:01Z","event":{{"kind":"event","action":"connect","outcome":"{outcome}"}},"message":"m","process":{{"pid":1,"name":"x"}},"destination":{{"address":"127.0.0.1:1"}},"tracer":{{"result":"r","unit":"{unit}"}}}}"#
            ));
        }
        m
    }

    #[test]
    fn filter_sort_group_and_drill_down() {
        let m = model();
        let now = 1_735_689_602.0;
        let mut app = App::new(Grouping::Unit);
        app.refresh(&m, now, false);
        assert_eq!(app.rows[0].key, "b.service", "failing first");
        press(&mut app, &m, KeyCode::Char('N'));
        app.refresh(&m, now, false);
        assert_eq!(app.rows[0].key, "a.service");
        press(&mut app, &m, KeyCode::Char('/'));
        for c in "b.s".chars() {
            press(&mut app, &m, KeyCode::Char(c));
        }
        press(&mut app, &m, KeyCode::Enter);
        app.refresh(&m, now, false);
        assert_eq!(app.rows.len(), 1);
        assert!(!app.editing);
        press(&mut app, &m, KeyCode::Enter);
        assert_eq!(
            app.screen,
            Screen::Attempts {
                key: "b.service".into()
            }
        );
        press(&mut app, &m, KeyCode::Enter);
        assert!(matches!(app.screen, Screen::Event { index: 0, .. }));
        press(&mut app, &m, KeyCode::Esc);
        press(&mut app, &m, KeyCode::Esc);
        assert_eq!(app.screen, Screen::Table);
        press(&mut app, &m, KeyCode::Esc);
        assert!(
            app.spec.filter.is_empty(),
            "Esc in the table clears the filter"
        );
        press(&mut app, &m, KeyCode::Tab);
        assert_eq!(app.spec.grouping, Grouping::Process);
        press(&mut app, &m, KeyCode::Char('4'));
        assert_eq!(app.spec.grouping, Grouping::Proxy);
        assert_eq!(press(&mut app, &m, KeyCode::Char('q')), Action::Quit);
    }

    #[test]
    fn a_typed_q_in_the_filter_does_not_quit() {
        let m = model();
        let mut app = App::new(Grouping::Unit);
        press(&mut app, &m, KeyCode::Char('/'));
        assert_eq!(press(&mut app, &m, KeyCode::Char('q')), Action::None);
        assert_eq!(app.spec.filter, "q");
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(app.key(ctrl_c, &m), Action::Quit);
    }
}
