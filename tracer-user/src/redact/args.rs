//! Secrets in command lines (`process.args`).
//!
//! A command line is chosen by the process and read by anyone who reads
//! the events, so the values of secret-bearing arguments are replaced with
//! `REDACTED` before an argument is stored:
//! - URL credentials (`http://user:pw@host`), as [`super::redact`] does;
//! - secret flags, `--NAME VALUE`, `--NAME=VALUE` and `-NAME VALUE`, where
//!   NAME says password, token, secret, api key, cookie, credential, ...
//!   ([`is_secret_name`]): `--password`, `--token`, `--client-secret`,
//!   `--api-key`, `-passin` (openssl), `-storepass` (keytool), ...;
//! - user flags `-u`, `-U`, `--user`, `--proxy-user`, `-E`/`--cert` keep
//!   the user (or file) and lose what follows the first `:` or `%`
//!   (`user:pw` for curl, `user%pw` for smbclient);
//! - header forms, wherever they stand (`-H`, `--header=`, httpie's
//!   positional `Name:value`, git's `http.extraHeader=`): the value of
//!   `Authorization:`, `Proxy-Authorization:`, `Cookie:`, `X-Api-Key:` and
//!   every header whose name is a secret name;
//! - `NAME=value` assignments (`env PGPASSWORD=…`, `sudo MYSQL_PWD=…`,
//!   `-Dx.password=…`) and URL query or form parameters (`?access_token=…`,
//!   `&X-Amz-Signature=…`, `password=…&…`) with a secret NAME;
//! - short options of the programs where a letter means a password: `-pPW`
//!   of the MySQL/MariaDB clients (attached only: `mysql -p db` prompts,
//!   and `db` is a database), `-p` of the Mongo tools, sshpass, mydumper,
//!   `-a` of redis-cli, `-P` of sqlcmd and bcp, curl's `-b` (cookies);
//!   `-p` means a port for most other programs and is kept. Combined short
//!   options (`-su user:pw`, `-uroot -pPW`) count too;
//! - `mysqladmin password NEW`;
//! - shell strings (`sh -c "mysql -pPW db"`, `su -c '...'`): an argument
//!   holding whitespace is split as a shell would, and its words go
//!   through the same rules (nested up to [`MAX_DEPTH`] levels; deeper, the
//!   whole argument is replaced).
//!
//! The program a rule belongs to is the command's own name or any later
//! argument naming one (`sudo mysql …`, `kubectl exec pod -- mysql …`).
//! The rules err towards hiding: a value after a flag whose name merely
//! looks secret is hidden too. What is not covered: a secret in a
//! positional argument of a program not listed here, or in a JSON body.

use std::ops::Range;

use super::{redact, REDACTED};

/// Shell strings inside shell strings are split this many levels deep.
const MAX_DEPTH: u8 = 3;

/// Redact every argument of a command line (see the module).
pub fn redact_args(args: &[String]) -> Vec<String> {
    let urls: Vec<String> = args.iter().map(|a| redact(a)).collect();
    redact_words(&urls, 0)
}

/// The rules that depend on the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Program {
    /// mysql, mariadb and their tools: `-pPW` (attached only).
    MySql,
    /// mysqladmin: also `password NEW`.
    MySqlAdmin,
    /// Mongo tools, sshpass, mydumper: `-p PW` or `-pPW`.
    DashP,
    /// redis-cli: `-a PW`.
    Redis,
    /// sqlcmd, bcp: `-P PW`.
    SqlCmd,
    /// curl: `-b` cookies, `-E cert:pw`.
    Curl,
    Other,
}

impl Program {
    /// The program a word names, when it has rules of its own.
    fn named(word: &str) -> Option<Program> {
        let base = word.rsplit('/').next().unwrap_or(word).to_ascii_lowercase();
        Some(match base.as_str() {
            "mysqladmin" | "mariadb-admin" => Program::MySqlAdmin,
            "mysql" | "mariadb" | "mysqldump" | "mariadb-dump" | "mysqlimport"
            | "mariadb-import" | "mysqlcheck" | "mariadb-check" | "mysqlshow" | "mariadb-show"
            | "mysqlslap" | "mariadb-slap" | "mysqlpump" | "mysqlbinlog" | "mariadb-binlog"
            | "mysqlsh" | "mysql_upgrade" | "mariadb-upgrade" => Program::MySql,
            "mongo" | "mongosh" | "mongodump" | "mongorestore" | "mongoexport" | "mongoimport"
            | "mongostat" | "mongotop" | "sshpass" | "mydumper" | "myloader" => Program::DashP,
            "redis-cli" | "valkey-cli" => Program::Redis,
            "sqlcmd" | "bcp" => Program::SqlCmd,
            "curl" => Program::Curl,
            _ => return None,
        })
    }

    /// What a short option letter of this program does with its value.
    fn letter(self, c: char) -> Letter {
        match (self, c) {
            (Program::MySql | Program::MySqlAdmin, 'p') => Letter::SecretAttached,
            // Options of the MySQL clients that take a value: the rest of
            // `-hhost` is a host, not more options (`-hproxy` is no `-p`).
            (Program::MySql | Program::MySqlAdmin, 'h' | 'P' | 'S' | 'D' | 'e') => Letter::Value,
            (Program::DashP, 'p') | (Program::Redis, 'a') | (Program::SqlCmd, 'P') => {
                Letter::Secret
            }
            (Program::Curl, 'b') => Letter::Secret,
            (Program::Curl, 'E') => Letter::UserPass,
            (Program::Curl, 'A' | 'C' | 'D' | 'K' | 'Q' | 'T' | 'X' | 'Y' | 'c' | 'd' | 'e')
            | (Program::Curl, 'm' | 'o' | 'r' | 't' | 'w' | 'x' | 'y' | 'z') => Letter::Value,
            (_, 'u' | 'U') => Letter::UserPass,
            (_, 'H') => Letter::Value,
            _ => Letter::Flag,
        }
    }
}

/// A short option letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Letter {
    /// Its value (attached, or the next argument) is a secret.
    Secret,
    /// Its value is a secret when attached; alone it prompts.
    SecretAttached,
    /// `user:secret`.
    UserPass,
    /// Takes a value that is not itself secret: the rest of the argument
    /// is that value, checked like any other.
    Value,
    /// A flag without value (or one we do not know): the next letter is
    /// another option.
    Flag,
}

/// What the previous argument says the next one is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Secret,
    UserPass,
    /// Every remaining word (a header name alone in a shell string: its
    /// value is the words after it).
    Rest,
}

/// A name (flag, variable, header, parameter) whose value is a secret.
/// Case, `_` and `.` are ignored (`MYSQL_PWD`, `X-Api-Key`,
/// `javax.net.ssl.keyStorePassword`).
pub fn is_secret_name(name: &str) -> bool {
    let n: String = name
        .trim_start_matches('-')
        .chars()
        .map(|c| match c {
            '_' | '.' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    const CONTAINS: &[&str] = &[
        "passw",
        "passphrase",
        "secret",
        "token",
        "apikey",
        "api-key",
        "accesskey",
        "access-key",
        "private-key",
        "privatekey",
        "credential",
        "authorization",
        "cookie",
        "signature",
        "session",
        "bearer",
    ];
    const EXACT: &[&str] = &["auth", "key", "sig", "pw", "passin", "passout"];
    !n.is_empty()
        && (CONTAINS.iter().any(|c| n.contains(c))
            || EXACT.contains(&n.as_str())
            || n.ends_with("pass")
            || n.ends_with("-pwd")
            || n.ends_with("-auth")
            || n.ends_with("-key"))
}

/// Flags whose value is `user:password` (or `file:password`).
fn is_user_name(name: &str) -> bool {
    matches!(
        name.trim_start_matches('-').to_ascii_lowercase().as_str(),
        "user" | "proxy-user" | "cert" | "proxy-cert" | "u"
    )
}

/// `user:pw` -> `user:REDACTED` (also `user%pw`, smbclient's form).
fn user_pass(value: &str) -> String {
    match value.find([':', '%']) {
        Some(i) => format!("{}{REDACTED}", &value[..=i]),
        None => value.to_string(),
    }
}

fn redact_words(words: &[String], depth: u8) -> Vec<String> {
    let mut out = Vec::with_capacity(words.len());
    let mut program = words
        .first()
        .and_then(|w| Program::named(w))
        .unwrap_or(Program::Other);
    let mut next: Option<Next> = None;
    for (i, word) in words.iter().enumerate() {
        let looks_like_option = word.len() > 1 && word.starts_with('-');
        match next.take() {
            Some(Next::Rest) => {
                out.push(REDACTED.to_string());
                next = Some(Next::Rest);
                continue;
            }
            // A flag where the value should be: the secret flag took no
            // value (`psql --no-password -h x`, `mysql --password -h x`).
            Some(Next::Secret) if !looks_like_option => {
                out.push(REDACTED.to_string());
                continue;
            }
            Some(Next::UserPass) if !looks_like_option => {
                out.push(user_pass(word));
                continue;
            }
            _ => {}
        }
        if i > 0 && !looks_like_option {
            if let Some(p) = Program::named(word) {
                program = p;
            }
        }
        let (text, then) = one_word(word, program, depth);
        out.push(text);
        next = then;
    }
    out
}

/// One argument (or word of a shell string): its redacted text, and what
/// it says about the next one.
fn one_word(word: &str, program: Program, depth: u8) -> (String, Option<Next>) {
    // Whole-word forms first: a header or an assignment may hold spaces
    // (`Authorization: Bearer x`) that must not be split apart.
    match scrub_value(word) {
        Scrubbed::Changed(text) => return (text, None),
        // A header name never starts with '-': `-pPW…Authorization:` is an
        // option (mysql's attached password) that merely ends like a
        // header, and the option rules below must see it (fuzz finding).
        Scrubbed::HeaderWithoutValue if depth > 0 && !word.trim_start().starts_with('-') => {
            return (word.to_string(), Some(Next::Rest))
        }
        _ => {}
    }
    if word.contains(char::is_whitespace) {
        if depth + 1 >= MAX_DEPTH {
            return (REDACTED.to_string(), None);
        }
        return (shell_string(word, depth + 1), None);
    }
    if let Some(long) = word.strip_prefix("--") {
        return long_option(word, long);
    }
    if let Some(short) = word.strip_prefix('-') {
        if !short.is_empty() && !short.starts_with(|c: char| c.is_ascii_digit()) {
            return short_option(word, short, program);
        }
    }
    if program == Program::MySqlAdmin && word == "password" {
        return (word.to_string(), Some(Next::Secret));
    }
    (word.to_string(), None)
}

/// `--NAME`, `--NAME=VALUE` (`long` is the text after `--`).
fn long_option(word: &str, long: &str) -> (String, Option<Next>) {
    match long.split_once('=') {
        Some((name, value)) => {
            let value = if is_secret_name(name) {
                REDACTED.to_string()
            } else if is_user_name(name) {
                user_pass(value)
            } else {
                match scrub_value(value) {
                    Scrubbed::Changed(v) => v,
                    _ => return (word.to_string(), None),
                }
            };
            (format!("--{name}={value}"), None)
        }
        None if long.starts_with("no-") => (word.to_string(), None),
        None if is_secret_name(long) => (word.to_string(), Some(Next::Secret)),
        None if is_user_name(long) => (word.to_string(), Some(Next::UserPass)),
        None => (word.to_string(), None),
    }
}

/// `-abc`, `-pPW`, `-su user:pw`, `-passin VALUE` (`short` is the text
/// after `-`).
fn short_option(word: &str, short: &str, program: Program) -> (String, Option<Next>) {
    // Single-dash long options (openssl, keytool, java): `-passin pass:x`,
    // `-storepass x`. A program's own letters come first: mysql's `-pass`
    // is the password "ass".
    let first = short.chars().next().unwrap_or('-');
    let own_letter = !matches!(program.letter(first), Letter::Flag | Letter::UserPass);
    if !own_letter && short.len() > 1 && is_name(short) && is_secret_name(short) {
        return (word.to_string(), Some(Next::Secret));
    }
    for (i, c) in short.char_indices() {
        let at = 1 + i + c.len_utf8();
        let (head, rest) = word.split_at(at);
        match program.letter(c) {
            Letter::Flag => continue,
            Letter::Secret if rest.is_empty() => return (word.to_string(), Some(Next::Secret)),
            Letter::Secret | Letter::SecretAttached if !rest.is_empty() => {
                return (format!("{head}{REDACTED}"), None)
            }
            Letter::SecretAttached => return (word.to_string(), None),
            Letter::UserPass if rest.is_empty() => return (word.to_string(), Some(Next::UserPass)),
            Letter::UserPass => return (format!("{head}{}", user_pass(rest)), None),
            Letter::Secret | Letter::Value => {
                return match scrub_value(rest) {
                    Scrubbed::Changed(v) => (format!("{head}{v}"), None),
                    _ => (word.to_string(), None),
                }
            }
        }
    }
    (word.to_string(), None)
}

/// The outcome of the whole-value rules.
enum Scrubbed {
    Changed(String),
    /// `Authorization:` with nothing after it.
    HeaderWithoutValue,
    Unchanged,
}

/// Rules for a value, wherever it stands: a header, an assignment, query
/// or form parameters.
fn scrub_value(value: &str) -> Scrubbed {
    if let Some(h) = header(value) {
        return h;
    }
    // `NAME=value` for the whole value: the value runs to the end
    // (`PGPASSWORD=a&b` is one password). Else it may hold a header
    // (`http.extraHeader=Authorization: x`).
    if let Some((name, rest)) = value.split_once('=') {
        if is_name(name.trim_start_matches('-')) {
            if is_secret_name(name) {
                return Scrubbed::Changed(format!("{name}={REDACTED}"));
            }
            if let Some(Scrubbed::Changed(v)) = header(rest) {
                return Scrubbed::Changed(format!("{name}={v}"));
            }
        }
    }
    match parameters(value) {
        Some(v) => Scrubbed::Changed(v),
        None => Scrubbed::Unchanged,
    }
}

/// Characters of a header, variable or parameter name.
fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `Name: value` with a secret header name -> `Name: REDACTED`.
fn header(value: &str) -> Option<Scrubbed> {
    let body = value.trim_start();
    let colon = body.find(':')?;
    let name = body[..colon].trim_end();
    if name.contains('.') || !is_name(name) || !is_secret_name(name) {
        return None;
    }
    let lead = value.len() - body.len();
    if body[colon + 1..].trim().is_empty() {
        return Some(Scrubbed::HeaderWithoutValue);
    }
    Some(Scrubbed::Changed(format!(
        "{}: {REDACTED}",
        &value[..lead + colon]
    )))
}

/// Query or form parameters (`?a=1&token=x#f`, `user=a;password=b`): the
/// values of secret names become `REDACTED`. None when nothing changed.
fn parameters(value: &str) -> Option<String> {
    let mut out = String::with_capacity(value.len());
    let mut changed = false;
    let mut rest = value;
    while !rest.is_empty() {
        // A parameter ends at the next separator.
        let end = rest.find(['&', ';', '?', '#']).unwrap_or(rest.len());
        let (param, tail) = rest.split_at(end);
        match param.split_once('=') {
            Some((name, _)) if is_name(name) && is_secret_name(name) => {
                out.push_str(name);
                out.push('=');
                out.push_str(REDACTED);
                changed = true;
            }
            _ => out.push_str(param),
        }
        match tail.chars().next() {
            Some(sep) => {
                out.push(sep);
                rest = &tail[sep.len_utf8()..];
            }
            None => rest = tail,
        }
    }
    changed.then_some(out)
}

/// A shell string: split into words as `sh` would, each word redacted as
/// an argument, and written back (a changed word single-quoted).
fn shell_string(s: &str, depth: u8) -> String {
    let words = shell_words(s);
    let values: Vec<String> = words.iter().map(|(_, v)| v.clone()).collect();
    let redacted = redact_words(&values, depth);
    let mut out = String::with_capacity(s.len());
    let mut pos = 0;
    for ((span, old), new) in words.iter().zip(&redacted) {
        out.push_str(&s[pos..span.start]);
        if old == new {
            out.push_str(&s[span.clone()]);
        } else {
            out.push('\'');
            out.push_str(&new.replace('\'', r"'\''"));
            out.push('\'');
        }
        pos = span.end;
    }
    out.push_str(&s[pos..]);
    out
}

/// The words of a shell string with their spans: whitespace separates,
/// `'…'` is literal, `"…"` and a backslash escape. An unterminated quote
/// runs to the end.
fn shell_words(s: &str) -> Vec<(Range<usize>, String)> {
    let mut words = Vec::new();
    let mut chars = s.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut value = String::new();
        let mut end = start;
        while let Some(&(i, c)) = chars.peek() {
            if c.is_whitespace() {
                break;
            }
            chars.next();
            end = i + c.len_utf8();
            match c {
                '\'' => {
                    for (j, c) in chars.by_ref() {
                        end = j + c.len_utf8();
                        if c == '\'' {
                            break;
                        }
                        value.push(c);
                    }
                }
                '"' => {
                    while let Some((j, c)) = chars.next() {
                        end = j + c.len_utf8();
                        match c {
                            '"' => break,
                            '\\' => {
                                if let Some((k, e)) = chars.next() {
                                    end = k + e.len_utf8();
                                    if !matches!(e, '"' | '\\' | '$' | '`') {
                                        value.push('\\');
                                    }
                                    value.push(e);
                                }
                            }
                            c => value.push(c),
                        }
                    }
                }
                '\\' => {
                    if let Some((k, e)) = chars.next() {
                        end = k + e.len_utf8();
                        value.push(e);
                    }
                }
                c => value.push(c),
            }
        }
        words.push((start..end, value));
    }
    words
}

/// Command lines that carry `secret` in every form this module redacts,
/// each after each of a few wrappers (`sudo`, `env A=1`, `kubectl exec
/// pod --`). The fuzz target `args` (tests/fuzz) and the tests plant
/// secrets with these and check that none survives [`redact_args`].
#[doc(hidden)]
pub fn planted(secret: &str) -> Vec<Vec<String>> {
    const FORMS: &[&[&str]] = &[
        &["curl", "-u", "bob:{s}", "http://h/"],
        &["curl", "-U", "bob:{s}"],
        &["curl", "--user", "bob:{s}"],
        &["curl", "--user=bob:{s}"],
        &["curl", "--proxy-user", "bob:{s}"],
        &["curl", "--proxy-user=bob:{s}"],
        &["curl", "-ubob:{s}"],
        &["curl", "-sSu", "bob:{s}"],
        &["curl", "-sSubob:{s}"],
        &["curl", "-E", "c.pem:{s}"],
        &["curl", "-b", "{s}"],
        &["curl", "-H", "Authorization: Bearer {s}"],
        &["curl", "-H", "authorization:{s}"],
        &["curl", "-HAuthorization: Basic {s}"],
        &["curl", "-sH", "Proxy-Authorization: Basic {s}"],
        &["curl", "--header", "Cookie: sid={s}"],
        &["curl", "--header=X-Api-Key: {s}"],
        &["curl", "--proxy-header", "Proxy-Authorization: {s}"],
        &["http", "h", "X-Auth-Token:{s}"],
        &["curl", "-x", "http://bob:{s}@proxy:3128", "h"],
        &["curl", "https://h/p?a=1&access_token={s}&b=2"],
        &["curl", "https://h/o?X-Amz-Signature={s}"],
        &["curl", "-d", "user=bob&password={s}"],
        &["x", "--password={s}"],
        &["x", "--password", "{s}"],
        &["x", "--token", "{s}"],
        &["x", "--token={s}"],
        &["x", "--secret", "{s}"],
        &["x", "--client-secret={s}"],
        &["x", "--api-key", "{s}"],
        &["x", "--auth-token", "{s}"],
        &["x", "-password", "{s}"],
        &["openssl", "-passin", "pass:{s}"],
        &["keytool", "-storepass", "{s}"],
        &["java", "-Dx.keyStorePassword={s}"],
        &["mysql", "-p{s}"],
        &["mysql", "-uroot", "-p{s}", "db"],
        &["mariadb", "-hdb", "-p{s}"],
        &["mysqldump", "--password={s}"],
        &["mysqladmin", "password", "{s}"],
        &["mongosh", "-p", "{s}"],
        &["sshpass", "-p{s}", "ssh", "h"],
        &["redis-cli", "-a", "{s}"],
        &["sqlcmd", "-U", "sa", "-P", "{s}"],
        &["env", "PGPASSWORD={s}", "psql"],
        &["MYSQL_PWD={s}", "mysql"],
        &["AWS_SECRET_ACCESS_KEY={s}", "aws"],
        &["smbclient", "-U", "bob%{s}"],
        &["psql", "host=db password={s}"],
        &["sh", "-c", "mysql -uroot -p{s} db"],
        &["sh", "-c", "curl -H 'Authorization: Bearer {s}' h"],
        &["sh", "-c", "curl -u bob:{s} h && echo ok"],
        &["bash", "-c", "sh -c \"PGPASSWORD={s} psql\""],
        &["sh", "-c", "echo Authorization: Bearer {s}"],
    ];
    const WRAPPERS: &[&[&str]] = &[
        &[],
        &["sudo"],
        &["env", "A=1"],
        &["timeout", "5"],
        &["kubectl", "exec", "pod", "--"],
    ];
    let mut out = Vec::new();
    for wrapper in WRAPPERS {
        for form in FORMS {
            let mut argv: Vec<String> = wrapper.iter().map(|w| w.to_string()).collect();
            argv.extend(form.iter().map(|w| w.replace("{s}", secret)));
            out.push(argv);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(args: &[&str]) -> Vec<String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        redact_args(&args)
    }

    /// Redacts `args`, and checks that "S3CR3T" is gone and the rest is
    /// what `want` says.
    #[track_caller]
    fn check(args: &[&str], want: &[&str]) {
        let got = r(args);
        assert_eq!(got, want, "{args:?}");
        assert!(
            !got.iter().any(|a| a.contains("S3CR3T")),
            "{args:?} -> {got:?}"
        );
    }

    #[test]
    fn curl_user_forms_keep_the_user() {
        check(
            &["curl", "-u", "bob:S3CR3T", "http://h/"],
            &["curl", "-u", "bob:REDACTED", "http://h/"],
        );
        check(
            &["curl", "-U", "bob:S3CR3T"],
            &["curl", "-U", "bob:REDACTED"],
        );
        check(
            &["curl", "--user", "bob:S3CR3T"],
            &["curl", "--user", "bob:REDACTED"],
        );
        check(
            &["curl", "--user=bob:S3CR3T"],
            &["curl", "--user=bob:REDACTED"],
        );
        check(
            &["curl", "--proxy-user", "bob:S3CR3T"],
            &["curl", "--proxy-user", "bob:REDACTED"],
        );
        check(&["curl", "-ubob:S3CR3T"], &["curl", "-ubob:REDACTED"]);
        check(
            &["curl", "-sSu", "bob:S3CR3T"],
            &["curl", "-sSu", "bob:REDACTED"],
        );
        check(&["curl", "-subob:S3CR3T"], &["curl", "-subob:REDACTED"]);
        check(
            &["curl", "-E", "client.pem:S3CR3T"],
            &["curl", "-E", "client.pem:REDACTED"],
        );
        check(
            &["curl", "--cert=client.pem:S3CR3T"],
            &["curl", "--cert=client.pem:REDACTED"],
        );
        check(
            &["smbclient", "-U", "bob%S3CR3T"],
            &["smbclient", "-U", "bob%REDACTED"],
        );
        // A user without a password, and users of other programs, stay.
        check(&["curl", "-u", "bob", "h"], &["curl", "-u", "bob", "h"]);
        check(
            &["sudo", "-u", "postgres", "psql"],
            &["sudo", "-u", "postgres", "psql"],
        );
    }

    #[test]
    fn an_option_ending_like_a_header_is_still_an_option() {
        // Found by the `args` fuzz target: the attached password's word
        // ends in a secret header name and a colon.
        let out = r(&["sh", "-c", "mysql -uroot -pPwaapikeyAuthorization: db"]);
        assert!(!out.iter().any(|a| a.contains("Pwaapikey")), "{out:?}");
    }

    #[test]
    fn secret_headers_lose_their_values() {
        for header in [
            "Authorization: Bearer S3CR3T",
            "Proxy-Authorization: Basic S3CR3T",
            "Cookie: session=S3CR3T",
            "X-Api-Key: S3CR3T",
            "X-Auth-Token:S3CR3T",
            "PRIVATE-TOKEN: S3CR3T",
            "x-amz-security-token: S3CR3T",
        ] {
            let name = header.split(':').next().unwrap_or_default();
            let want = format!("{name}: REDACTED");
            check(&["curl", "-H", header], &["curl", "-H", &want]);
            check(
                &["curl", &format!("--header={header}")],
                &["curl", &format!("--header={want}")],
            );
            check(
                &["curl", &format!("-H{header}")],
                &["curl", &format!("-H{want}")],
            );
            check(
                &["curl", "--proxy-header", header],
                &["curl", "--proxy-header", &want],
            );
        }
        // httpie's positional header, git's config value.
        check(
            &["http", "GET", "h", "Authorization:Bearer S3CR3T"],
            &["http", "GET", "h", "Authorization: REDACTED"],
        );
        check(
            &[
                "git",
                "-c",
                "http.extraHeader=Authorization: Basic S3CR3T",
                "clone",
            ],
            &[
                "git",
                "-c",
                "http.extraHeader=Authorization: REDACTED",
                "clone",
            ],
        );
        // Other headers stay.
        check(
            &["curl", "-H", "Accept: text/plain"],
            &["curl", "-H", "Accept: text/plain"],
        );
    }

    #[test]
    fn secret_flags_in_both_forms() {
        for flag in [
            "password",
            "token",
            "secret",
            "client-secret",
            "api-key",
            "apikey",
            "access-token",
            "auth-token",
            "oauth2-bearer",
            "db-password",
            "passphrase",
            "pass",
            "key-pass",
            "cookie",
        ] {
            check(
                &["x", &format!("--{flag}=S3CR3T"), "y"],
                &["x", &format!("--{flag}=REDACTED"), "y"],
            );
            check(
                &["x", &format!("--{flag}"), "S3CR3T", "y"],
                &["x", &format!("--{flag}"), "REDACTED", "y"],
            );
        }
        check(
            &["openssl", "pkcs12", "-passin", "pass:S3CR3T"],
            &["openssl", "pkcs12", "-passin", "REDACTED"],
        );
        check(
            &["keytool", "-storepass", "S3CR3T"],
            &["keytool", "-storepass", "REDACTED"],
        );
        check(
            &[
                "java",
                "-Djavax.net.ssl.trustStorePassword=S3CR3T",
                "-jar",
                "a.jar",
            ],
            &[
                "java",
                "-Djavax.net.ssl.trustStorePassword=REDACTED",
                "-jar",
                "a.jar",
            ],
        );
        // A secret flag followed by another flag took no value.
        check(
            &["psql", "--no-password", "-h", "db"],
            &["psql", "--no-password", "-h", "db"],
        );
        check(
            &["mysql", "--password", "-h", "db"],
            &["mysql", "--password", "-h", "db"],
        );
        // Flags that are not secret keep their values.
        check(
            &["x", "--output", "f", "--verbose=1"],
            &["x", "--output", "f", "--verbose=1"],
        );
    }

    #[test]
    fn database_clients_and_their_dash_p() {
        check(&["mysql", "-pS3CR3T", "db"], &["mysql", "-pREDACTED", "db"]);
        check(
            &["/usr/bin/mysql", "-uroot", "-pS3CR3T"],
            &["/usr/bin/mysql", "-uroot", "-pREDACTED"],
        );
        check(
            &["mariadb", "-hdb.local", "-pS3CR3T"],
            &["mariadb", "-hdb.local", "-pREDACTED"],
        );
        check(
            &["mysqladmin", "-uroot", "-pS3CR3T", "password", "S3CR3T2"],
            &["mysqladmin", "-uroot", "-pREDACTED", "password", "REDACTED"],
        );
        // `-p` alone prompts; the next word is the database.
        check(&["mysql", "-p", "shop"], &["mysql", "-p", "shop"]);
        check(
            &["mongosh", "-u", "admin", "-p", "S3CR3T"],
            &["mongosh", "-u", "admin", "-p", "REDACTED"],
        );
        check(
            &["sshpass", "-pS3CR3T", "ssh", "h"],
            &["sshpass", "-pREDACTED", "ssh", "h"],
        );
        check(
            &["redis-cli", "-a", "S3CR3T", "ping"],
            &["redis-cli", "-a", "REDACTED", "ping"],
        );
        check(
            &["sqlcmd", "-S", "db", "-U", "sa", "-P", "S3CR3T"],
            &["sqlcmd", "-S", "db", "-U", "sa", "-P", "REDACTED"],
        );
        // Behind a wrapper.
        check(
            &["sudo", "-u", "mysql", "mysql", "-pS3CR3T"],
            &["sudo", "-u", "mysql", "mysql", "-pREDACTED"],
        );
        check(
            &["kubectl", "exec", "db-0", "--", "mysql", "-pS3CR3T"],
            &["kubectl", "exec", "db-0", "--", "mysql", "-pREDACTED"],
        );
        // `-p` is a port (or a flag) for other programs.
        check(&["ssh", "-p", "2222", "h"], &["ssh", "-p", "2222", "h"]);
        check(&["nc", "-p1234", "h"], &["nc", "-p1234", "h"]);
        check(
            &["docker", "run", "-p", "80:80"],
            &["docker", "run", "-p", "80:80"],
        );
    }

    #[test]
    fn assignments_and_parameters() {
        check(
            &["env", "PGPASSWORD=S3CR3T", "psql"],
            &["env", "PGPASSWORD=REDACTED", "psql"],
        );
        check(
            &[
                "sudo",
                "MYSQL_PWD=S3CR3T",
                "AWS_SECRET_ACCESS_KEY=S3CR3T",
                "x",
            ],
            &[
                "sudo",
                "MYSQL_PWD=REDACTED",
                "AWS_SECRET_ACCESS_KEY=REDACTED",
                "x",
            ],
        );
        check(
            &["env", "GITHUB_TOKEN=S3CR3T&x", "PATH=/bin", "x"],
            &["env", "GITHUB_TOKEN=REDACTED", "PATH=/bin", "x"],
        );
        check(
            &["curl", "https://h/x?access_token=S3CR3T&a=1"],
            &["curl", "https://h/x?access_token=REDACTED&a=1"],
        );
        check(
            &[
                "curl",
                "https://b.s3/o?X-Amz-Credential=S3CR3T&X-Amz-Signature=S3CR3T#f",
            ],
            &[
                "curl",
                "https://b.s3/o?X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED#f",
            ],
        );
        check(
            &["curl", "-d", "user=bob&password=S3CR3T"],
            &["curl", "-d", "user=bob&password=REDACTED"],
        );
        check(
            &["curl", "-duser=bob&password=S3CR3T"],
            &["curl", "-duser=bob&password=REDACTED"],
        );
        check(&["x", "key=S3CR3T"], &["x", "key=REDACTED"]);
        check(&["x", "FOO=bar", "a=b"], &["x", "FOO=bar", "a=b"]);
        // URL credentials, as before.
        check(
            &["curl", "-x", "http://bob:S3CR3T@proxy:3128", "h"],
            &["curl", "-x", "http://REDACTED@proxy:3128", "h"],
        );
    }

    #[test]
    fn shell_strings_are_split_and_redacted() {
        check(
            &["sh", "-c", "mysql -uroot -pS3CR3T shop < dump.sql"],
            &["sh", "-c", "mysql -uroot '-pREDACTED' shop < dump.sql"],
        );
        check(
            &[
                "bash",
                "-c",
                "curl -H 'Authorization: Bearer S3CR3T' https://h/",
            ],
            &["bash", "-c", "curl -H 'Authorization: REDACTED' https://h/"],
        );
        check(
            &["sh", "-c", "echo Authorization: Bearer S3CR3T"],
            &["sh", "-c", "echo Authorization: 'REDACTED' 'REDACTED'"],
        );
        check(
            &["sh", "-c", "sh -c \"curl -u bob:S3CR3T h\""],
            &["sh", "-c", "sh -c 'curl -u '\\''bob:REDACTED'\\'' h'"],
        );
        check(
            &["psql", "host=db password=S3CR3T"],
            &["psql", "host=db 'password=REDACTED'"],
        );
        // Deeper than MAX_DEPTH: the whole word goes.
        let deep = r(&["a", "b \"c 'd e S3CR3T'\""]);
        assert!(!deep.concat().contains("S3CR3T"), "{deep:?}");
    }

    #[test]
    fn ordinary_command_lines_are_unchanged() {
        for args in [
            &["containerd", "--config", "/etc/containerd/config.toml"][..],
            &[
                "curl",
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "https://h/v2/",
            ],
            &["kubelet", "--node-ip=10.0.0.1", "--v=2"],
            &["python3", "-c", "print(1)"],
            &["ls", "-la", "/tmp"],
            &["git", "commit", "--author=A <a@b>"],
        ] {
            let got = r(args);
            let want: Vec<String> = args.iter().map(|s| redact(s)).collect();
            assert_eq!(got, want);
        }
    }

    /// What the fuzz target checks, for a spread of secrets: each of the
    /// characters a secret may hold, at the start, middle and end.
    #[test]
    fn no_planted_secret_survives() {
        let alphabet = "abcXYZ019!$*+,-./:@^_~%";
        let mut secrets = vec!["Pw".to_string()];
        for c in alphabet.chars() {
            secrets.push(format!("Pw{c}x7"));
            secrets.push(format!("Pw7{c}"));
            secrets.push(format!("Pw{c}{c}q{c}"));
        }
        for secret in &secrets {
            for argv in planted(secret) {
                let out = redact_args(&argv);
                assert_eq!(out.len(), argv.len());
                assert!(
                    !out.iter().any(|a| a.contains(secret.as_str())),
                    "{argv:?} -> {out:?}"
                );
            }
        }
    }

    #[test]
    fn shell_words_follow_quoting() {
        let words: Vec<String> = shell_words(r#"a 'b c' "d \"e\"" f\ g"#)
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        assert_eq!(words, ["a", "b c", "d \"e\"", "f g"]);
        assert_eq!(shell_words("'unterminated").len(), 1);
        assert!(shell_words("   ").is_empty());
    }
}
