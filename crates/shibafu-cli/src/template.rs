//! The subset of Go's `text/template` that docker's `--format` users rely on, over
//! JSON values: `{{.Field.Sub}}`, `{{json .}}`, `{{index .Labels "k"}}`, pipes,
//! `if`/`else`/`range`/`with`/`end` with `$var :=`, trim markers, and docker's extra
//! functions (`json`, `join`, `split`, `upper`, `lower`, `title`, `truncate`, `pad`,
//! `println`, `printf`, `len`, `eq`, `ne`, `not`, `and`, `or`).

use serde_json::Value;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("template parsing error: {0}")]
    Parse(String),
    #[error("template: executing: {0}")]
    Exec(String),
}

type Res<T> = Result<T, TemplateError>;

fn perr<T>(msg: impl Into<String>) -> Res<T> {
    Err(TemplateError::Parse(msg.into()))
}
fn eerr<T>(msg: impl Into<String>) -> Res<T> {
    Err(TemplateError::Exec(msg.into()))
}

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action(Pipe),
    If(Pipe, Vec<Node>, Vec<Node>),
    Range(Pipe, Vec<Node>, Vec<Node>),
    With(Pipe, Vec<Node>, Vec<Node>),
}

#[derive(Debug, Clone)]
struct Pipe {
    /// `$k, $v :=` declarations.
    decl: Vec<String>,
    cmds: Vec<Vec<Term>>,
}

#[derive(Debug, Clone)]
enum Term {
    /// `.` followed by zero or more fields.
    Dot(Vec<String>),
    /// `$name` followed by fields (`$` alone is the root).
    Var(String, Vec<String>),
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Nil,
    Func(String),
    /// `(pipeline)` followed by fields.
    Sub(Box<Pipe>, Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Field(String),
    Dot,
    Var(String),
    Str(String),
    Num(String),
    Ident(String),
    Pipe,
    LParen,
    RParen,
    Declare,
    Comma,
}

fn lex(src: &str) -> Res<Vec<Tok>> {
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0;
    let mut toks = Vec::new();
    let ident_char = |c: char| c.is_alphanumeric() || c == '_';
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '|' {
            toks.push(Tok::Pipe);
            i += 1;
        } else if c == '(' {
            toks.push(Tok::LParen);
            i += 1;
        } else if c == ')' {
            toks.push(Tok::RParen);
            i += 1;
        } else if c == ',' {
            toks.push(Tok::Comma);
            i += 1;
        } else if c == ':' && chars.get(i + 1) == Some(&'=') {
            toks.push(Tok::Declare);
            i += 2;
        } else if c == '=' {
            toks.push(Tok::Declare);
            i += 1;
        } else if c == '.' {
            let start = i + 1;
            let mut j = start;
            while j < chars.len() && ident_char(chars[j]) {
                j += 1;
            }
            if j == start {
                if chars.get(j).is_some_and(|c| c.is_ascii_digit()) {
                    return perr(format!("bad number syntax in {src:?}"));
                }
                toks.push(Tok::Dot);
            } else {
                toks.push(Tok::Field(chars[start..j].iter().collect()));
            }
            i = j;
        } else if c == '$' {
            let mut j = i + 1;
            while j < chars.len() && ident_char(chars[j]) {
                j += 1;
            }
            toks.push(Tok::Var(chars[i + 1..j].iter().collect()));
            i = j;
        } else if c == '"' {
            let mut s = String::new();
            let mut j = i + 1;
            loop {
                match chars.get(j) {
                    None => return perr("unterminated quoted string"),
                    Some('"') => break,
                    Some('\\') => {
                        let e = chars.get(j + 1).copied().unwrap_or('\\');
                        s.push(match e {
                            'n' => '\n',
                            't' => '\t',
                            'r' => '\r',
                            '0' => '\0',
                            o => o,
                        });
                        j += 2;
                    }
                    Some(&o) => {
                        s.push(o);
                        j += 1;
                    }
                }
            }
            toks.push(Tok::Str(s));
            i = j + 1;
        } else if c == '`' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != '`' {
                j += 1;
            }
            if j >= chars.len() {
                return perr("unterminated raw quoted string");
            }
            toks.push(Tok::Str(chars[i + 1..j].iter().collect()));
            i = j + 1;
        } else if c.is_ascii_digit()
            || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            let mut j = i + 1;
            while j < chars.len()
                && (chars[j].is_ascii_digit() || chars[j] == '.' || chars[j] == 'e')
            {
                j += 1;
            }
            toks.push(Tok::Num(chars[i..j].iter().collect()));
            i = j;
        } else if ident_char(c) {
            let mut j = i;
            while j < chars.len() && ident_char(chars[j]) {
                j += 1;
            }
            toks.push(Tok::Ident(chars[i..j].iter().collect()));
            i = j;
        } else {
            return perr(format!("unexpected {c:?} in command"));
        }
    }
    Ok(toks)
}

struct PipeParser {
    toks: Vec<Tok>,
    pos: usize,
}

impl PipeParser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn fields(&mut self) -> Vec<String> {
        let mut f = Vec::new();
        while let Some(Tok::Field(name)) = self.peek() {
            f.push(name.clone());
            self.pos += 1;
        }
        f
    }

    fn pipe(&mut self, nested: bool) -> Res<Pipe> {
        let mut decl = Vec::new();
        // `$a :=` or `$a, $b :=`
        let save = self.pos;
        let mut vars = Vec::new();
        while let Some(Tok::Var(v)) = self.peek() {
            vars.push(v.clone());
            self.pos += 1;
            match self.peek() {
                Some(Tok::Comma) => self.pos += 1,
                Some(Tok::Declare) => {
                    self.pos += 1;
                    decl = std::mem::take(&mut vars);
                    break;
                }
                _ => break,
            }
        }
        if decl.is_empty() {
            self.pos = save;
        }
        let mut cmds = Vec::new();
        let mut cmd = Vec::new();
        loop {
            match self.peek().cloned() {
                None => break,
                Some(Tok::RParen) if nested => break,
                Some(Tok::RParen) => return perr("unexpected right paren"),
                Some(Tok::Pipe) => {
                    self.pos += 1;
                    if cmd.is_empty() {
                        return perr("missing command before '|'");
                    }
                    cmds.push(std::mem::take(&mut cmd));
                }
                Some(Tok::LParen) => {
                    self.pos += 1;
                    let inner = self.pipe(true)?;
                    if self.peek() != Some(&Tok::RParen) {
                        return perr("unclosed left paren");
                    }
                    self.pos += 1;
                    let f = self.fields();
                    cmd.push(Term::Sub(Box::new(inner), f));
                }
                Some(Tok::Dot) => {
                    self.pos += 1;
                    cmd.push(Term::Dot(Vec::new()));
                }
                Some(Tok::Field(_)) => {
                    let f = self.fields();
                    cmd.push(Term::Dot(f));
                }
                Some(Tok::Var(v)) => {
                    self.pos += 1;
                    let f = self.fields();
                    cmd.push(Term::Var(v, f));
                }
                Some(Tok::Str(s)) => {
                    self.pos += 1;
                    cmd.push(Term::Str(s));
                }
                Some(Tok::Num(n)) => {
                    self.pos += 1;
                    if let Ok(i) = n.parse::<i64>() {
                        cmd.push(Term::Int(i));
                    } else if let Ok(f) = n.parse::<f64>() {
                        cmd.push(Term::Float(f));
                    } else {
                        return perr(format!("bad number syntax: {n:?}"));
                    }
                }
                Some(Tok::Ident(id)) => {
                    self.pos += 1;
                    cmd.push(match id.as_str() {
                        "true" => Term::Bool(true),
                        "false" => Term::Bool(false),
                        "nil" => Term::Nil,
                        _ => {
                            if !FUNCS.contains(&id.as_str()) {
                                return perr(format!("function {id:?} not defined"));
                            }
                            Term::Func(id)
                        }
                    });
                }
                Some(Tok::Comma) | Some(Tok::Declare) => {
                    return perr("unexpected token in command")
                }
            }
        }
        if !cmd.is_empty() {
            cmds.push(cmd);
        }
        if cmds.is_empty() {
            return perr("missing value for command");
        }
        Ok(Pipe { decl, cmds })
    }
}

const FUNCS: &[&str] = &[
    "json", "index", "join", "split", "upper", "lower", "title", "truncate", "pad", "println",
    "print", "printf", "len", "eq", "ne", "lt", "le", "gt", "ge", "not", "and", "or",
];

fn parse_pipe(src: &str) -> Res<Pipe> {
    let mut p = PipeParser {
        toks: lex(src)?,
        pos: 0,
    };
    p.pipe(false)
}

enum Piece {
    Text(String),
    Action(String),
}

/// Splits the source into text and action pieces, applying `{{-`/`-}}` trimming.
fn split(src: &str) -> Res<Vec<Piece>> {
    let mut pieces = Vec::new();
    let mut rest = src;
    let mut trim_next = false;
    while let Some(start) = rest.find("{{") {
        let mut text = &rest[..start];
        if trim_next {
            text = text.trim_start();
        }
        let after = &rest[start + 2..];
        let (trim_before, after) = match after.strip_prefix("- ") {
            Some(a) => (true, a),
            None => (false, after),
        };
        if trim_before {
            text = text.trim_end();
        }
        pieces.push(Piece::Text(text.to_string()));
        let end = after
            .find("}}")
            .ok_or_else(|| TemplateError::Parse("unclosed action".into()))?;
        let mut action = &after[..end];
        trim_next = false;
        if let Some(a) = action.strip_suffix(" -") {
            action = a;
            trim_next = true;
        }
        pieces.push(Piece::Action(action.trim().to_string()));
        rest = &after[end + 2..];
    }
    let text = if trim_next { rest.trim_start() } else { rest };
    pieces.push(Piece::Text(text.to_string()));
    Ok(pieces)
}

/// What ended a list of nodes.
enum Stop {
    Eof,
    End,
    Else(Option<String>),
}

fn parse_nodes(pieces: &[Piece], pos: &mut usize) -> Res<(Vec<Node>, Stop)> {
    let mut nodes = Vec::new();
    while *pos < pieces.len() {
        let piece = &pieces[*pos];
        *pos += 1;
        match piece {
            Piece::Text(t) => {
                if !t.is_empty() {
                    nodes.push(Node::Text(t.clone()));
                }
            }
            Piece::Action(a) => {
                if a.starts_with("/*") {
                    continue;
                }
                let (kw, rest) = match a.split_once(char::is_whitespace) {
                    Some((k, r)) => (k, r.trim()),
                    None => (a.as_str(), ""),
                };
                match kw {
                    "end" => return Ok((nodes, Stop::End)),
                    "else" => {
                        return Ok((
                            nodes,
                            Stop::Else(if rest.is_empty() {
                                None
                            } else {
                                Some(rest.to_string())
                            }),
                        ))
                    }
                    "if" | "range" | "with" => {
                        let pipe = parse_pipe(rest)?;
                        let node = parse_control(kw, pipe, pieces, pos)?;
                        nodes.push(node);
                    }
                    _ => nodes.push(Node::Action(parse_pipe(a)?)),
                }
            }
        }
    }
    Ok((nodes, Stop::Eof))
}

fn parse_control(kw: &str, pipe: Pipe, pieces: &[Piece], pos: &mut usize) -> Res<Node> {
    let (body, end) = parse_nodes(pieces, pos)?;
    let else_body = match end {
        Stop::Eof => return perr(format!("unexpected EOF: missing {{{{end}}}} for {kw}")),
        Stop::End => Vec::new(),
        Stop::Else(None) => match parse_nodes(pieces, pos)? {
            (n, Stop::End) => n,
            _ => return perr("expected {{end}} after {{else}}"),
        },
        // `else if ...` / `else with ...`: a nested control that consumes the final end.
        Stop::Else(Some(rest)) => {
            let (kw2, r) = rest
                .split_once(char::is_whitespace)
                .unwrap_or((rest.as_str(), ""));
            if kw2 != "if" && kw2 != "with" {
                return perr(format!("unexpected {rest:?} after else"));
            }
            vec![parse_control(kw2, parse_pipe(r)?, pieces, pos)?]
        }
    };
    Ok(match kw {
        "if" => Node::If(pipe, body, else_body),
        "range" => Node::Range(pipe, body, else_body),
        _ => Node::With(pipe, body, else_body),
    })
}

/// A parsed template, reusable across values.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
}

impl Template {
    pub fn parse(src: &str) -> Res<Template> {
        let pieces = split(src)?;
        let mut pos = 0;
        match parse_nodes(&pieces, &mut pos)? {
            (nodes, Stop::Eof) => Ok(Template { nodes }),
            (_, Stop::End) => perr("unexpected {{end}}"),
            (_, Stop::Else(_)) => perr("unexpected {{else}}"),
        }
    }

    pub fn render(&self, data: &Value) -> Res<String> {
        let mut out = String::new();
        let mut vars = vec![("".to_string(), data.clone())];
        exec(&self.nodes, data, &mut vars, &mut out)?;
        Ok(out)
    }
}

/// A value during evaluation; `Missing` is a map key that is absent (Go prints
/// "<no value>" for it).
#[derive(Debug, Clone, PartialEq)]
enum V {
    J(Value),
    Missing,
}

impl V {
    fn json(&self) -> &Value {
        match self {
            V::J(v) => v,
            V::Missing => &Value::Null,
        }
    }
}

fn truthy(v: &V) -> bool {
    match v.json() {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().unwrap_or(0.0) != 0.0,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Go's `%v` of a decoded JSON value.
pub fn go_print(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.to_string()
            } else if let Some(u) = n.as_u64() {
                u.to_string()
            } else {
                let f = n.as_f64().unwrap_or(0.0);
                if f.fract() == 0.0 && f.abs() < 1e21 {
                    format!("{f:.0}")
                } else {
                    f.to_string()
                }
            }
        }
        Value::String(s) => s.clone(),
        Value::Array(a) => format!("[{}]", a.iter().map(go_print).collect::<Vec<_>>().join(" ")),
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .iter()
                .map(|k| format!("{k}:{}", go_print(&o[*k])))
                .collect();
            format!("map[{}]", parts.join(" "))
        }
    }
}

fn print_v(v: &V) -> String {
    match v {
        V::Missing => "<no value>".into(),
        V::J(j) => go_print(j),
    }
}

/// Go's `json.Marshal` of a decoded value: compact, HTML characters escaped.
pub fn go_json(v: &Value) -> String {
    let s = serde_json::to_string(v).unwrap_or_default();
    s.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

fn field(v: &V, name: &str) -> Res<V> {
    match v {
        V::J(Value::Object(o)) => Ok(o.get(name).cloned().map(V::J).unwrap_or(V::Missing)),
        V::J(Value::Null) | V::Missing => Ok(V::Missing),
        V::J(other) => eerr(format!(
            "can't evaluate field {name} in type {}",
            type_name(other)
        )),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

fn fields(mut v: V, names: &[String]) -> Res<V> {
    for n in names {
        v = field(&v, n)?;
    }
    Ok(v)
}

fn lookup_var(vars: &[(String, Value)], name: &str) -> Res<Value> {
    vars.iter()
        .rev()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
        .ok_or_else(|| TemplateError::Exec(format!("undefined variable: ${name}")))
}

fn eval_term(t: &Term, dot: &Value, vars: &mut Vec<(String, Value)>) -> Res<V> {
    match t {
        Term::Dot(f) => fields(V::J(dot.clone()), f),
        Term::Var(name, f) => fields(V::J(lookup_var(vars, name)?), f),
        Term::Str(s) => Ok(V::J(Value::String(s.clone()))),
        Term::Int(i) => Ok(V::J(Value::from(*i))),
        Term::Float(x) => Ok(V::J(
            serde_json::Number::from_f64(*x)
                .map(Value::Number)
                .unwrap_or(Value::Null),
        )),
        Term::Bool(b) => Ok(V::J(Value::Bool(*b))),
        Term::Nil => Ok(V::J(Value::Null)),
        Term::Func(name) => call(name, Vec::new()),
        Term::Sub(p, f) => {
            let v = eval_pipe(p, dot, vars)?;
            fields(v, f)
        }
    }
}

fn eval_pipe(p: &Pipe, dot: &Value, vars: &mut Vec<(String, Value)>) -> Res<V> {
    let mut last: Option<V> = None;
    for cmd in &p.cmds {
        let v = match &cmd[0] {
            Term::Func(name) => {
                let mut args = Vec::new();
                for a in &cmd[1..] {
                    args.push(eval_term(a, dot, vars)?);
                }
                if let Some(prev) = last.take() {
                    args.push(prev);
                }
                call(name, args)?
            }
            other => {
                if cmd.len() > 1 || last.is_some() {
                    return eerr("can't give argument to non-function");
                }
                eval_term(other, dot, vars)?
            }
        };
        last = Some(v);
    }
    let v = last.unwrap_or(V::Missing);
    if let Some(name) = p.decl.first() {
        vars.push((name.clone(), v.json().clone()));
    }
    Ok(v)
}

fn as_str(v: &V) -> String {
    print_v(v)
}

fn as_int(v: &V) -> Res<i64> {
    match v.json() {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .ok_or_else(|| TemplateError::Exec("bad number".into())),
        Value::String(s) => s
            .parse()
            .map_err(|_| TemplateError::Exec(format!("expected integer; found {s:?}"))),
        other => eerr(format!("expected integer; found {}", go_print(other))),
    }
}

fn cmp_vals(a: &V, b: &V) -> Option<std::cmp::Ordering> {
    match (a.json(), b.json()) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (x, y) if x == y => Some(std::cmp::Ordering::Equal),
        _ => None,
    }
}

fn call(name: &str, args: Vec<V>) -> Res<V> {
    let s = |v: String| Ok(V::J(Value::String(v)));
    let want = |n: usize| -> Res<()> {
        if args.len() != n {
            return eerr(format!(
                "wrong number of args for {name}: want {n} got {}",
                args.len()
            ));
        }
        Ok(())
    };
    match name {
        "json" => {
            want(1)?;
            s(go_json(args[0].json()))
        }
        "upper" => {
            want(1)?;
            s(as_str(&args[0]).to_uppercase())
        }
        "lower" => {
            want(1)?;
            s(as_str(&args[0]).to_lowercase())
        }
        "title" => {
            want(1)?;
            let t = as_str(&args[0]);
            let mut out = String::new();
            let mut prev_space = true;
            for c in t.chars() {
                if prev_space {
                    out.extend(c.to_uppercase());
                } else {
                    out.push(c);
                }
                prev_space = c.is_whitespace();
            }
            s(out)
        }
        "join" => {
            want(2)?;
            let sep = as_str(&args[1]);
            match args[0].json() {
                Value::Array(a) => s(a.iter().map(go_print).collect::<Vec<_>>().join(&sep)),
                other => s(go_print(other)),
            }
        }
        "split" => {
            want(2)?;
            let parts = as_str(&args[0])
                .split(&as_str(&args[1]))
                .map(|p| Value::String(p.to_string()))
                .collect();
            Ok(V::J(Value::Array(parts)))
        }
        "truncate" => {
            want(2)?;
            let n = as_int(&args[1])?.max(0) as usize;
            s(as_str(&args[0]).chars().take(n).collect())
        }
        "pad" => {
            want(3)?;
            let l = as_int(&args[1])?.max(0) as usize;
            let r = as_int(&args[2])?.max(0) as usize;
            s(format!(
                "{}{}{}",
                " ".repeat(l),
                as_str(&args[0]),
                " ".repeat(r)
            ))
        }
        "len" => {
            want(1)?;
            let n = match args[0].json() {
                Value::Array(a) => a.len(),
                Value::Object(o) => o.len(),
                Value::String(x) => x.len(),
                other => return eerr(format!("len of type {}", type_name(other))),
            };
            Ok(V::J(Value::from(n)))
        }
        "index" => {
            if args.is_empty() {
                return eerr("wrong number of args for index");
            }
            let mut cur = args[0].clone();
            for k in &args[1..] {
                cur = match (cur.json(), k.json()) {
                    (Value::Object(o), Value::String(key)) => {
                        o.get(key).cloned().map(V::J).unwrap_or(V::Missing)
                    }
                    (Value::Array(a), _) => {
                        let i = as_int(k)?;
                        match usize::try_from(i).ok().and_then(|i| a.get(i)) {
                            Some(v) => V::J(v.clone()),
                            None => {
                                return eerr(format!(
                                    "error calling index: index out of range: {i}"
                                ))
                            }
                        }
                    }
                    (Value::Null, _) => V::Missing,
                    (other, _) => {
                        return eerr(format!("can't index item of type {}", type_name(other)))
                    }
                };
            }
            Ok(cur)
        }
        "println" | "print" => {
            let parts: Vec<String> = args.iter().map(as_str).collect();
            let mut out = if name == "println" {
                parts.join(" ")
            } else {
                parts.concat()
            };
            if name == "println" {
                out.push('\n');
            }
            s(out)
        }
        "printf" => {
            if args.is_empty() {
                return eerr("wrong number of args for printf");
            }
            s(printf(&as_str(&args[0]), &args[1..]))
        }
        "eq" | "ne" => {
            if args.len() < 2 {
                return eerr(format!("wrong number of args for {name}"));
            }
            let eq = args[1..]
                .iter()
                .any(|b| cmp_vals(&args[0], b) == Some(std::cmp::Ordering::Equal));
            Ok(V::J(Value::Bool(if name == "eq" { eq } else { !eq })))
        }
        "lt" | "le" | "gt" | "ge" => {
            want(2)?;
            use std::cmp::Ordering::*;
            let o = cmp_vals(&args[0], &args[1]).ok_or_else(|| {
                TemplateError::Exec(format!("incompatible types for comparison in {name}"))
            })?;
            let r = match name {
                "lt" => o == Less,
                "le" => o != Greater,
                "gt" => o == Greater,
                _ => o != Less,
            };
            Ok(V::J(Value::Bool(r)))
        }
        "not" => {
            want(1)?;
            Ok(V::J(Value::Bool(!truthy(&args[0]))))
        }
        "and" | "or" => {
            if args.is_empty() {
                return eerr(format!("wrong number of args for {name}"));
            }
            for a in &args {
                if truthy(a) != (name == "and") {
                    return Ok(a.clone());
                }
            }
            Ok(args[args.len() - 1].clone())
        }
        _ => eerr(format!("function {name:?} not defined")),
    }
}

/// Enough of Go's fmt verbs for templates: %s %v %d %q %%, with optional width.
fn printf(fmt: &str, args: &[V]) -> String {
    let mut out = String::new();
    let mut it = fmt.chars().peekable();
    let mut ai = 0;
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut width = String::new();
        while let Some(&d) = it.peek() {
            if d.is_ascii_digit() || d == '-' {
                width.push(d);
                it.next();
            } else {
                break;
            }
        }
        let verb = it.next().unwrap_or('%');
        if verb == '%' {
            out.push('%');
            continue;
        }
        let arg = args.get(ai);
        ai += 1;
        let text = match (verb, arg) {
            (_, None) => format!("%!{verb}(MISSING)"),
            ('q', Some(a)) => crate::human::go_quote(&as_str(a)),
            (_, Some(a)) => as_str(a),
        };
        let w: i64 = width.parse().unwrap_or(0);
        let n = text.chars().count() as i64;
        if w < 0 && -w > n {
            out.push_str(&text);
            out.push_str(&" ".repeat((-w - n) as usize));
        } else if w > n {
            out.push_str(&" ".repeat((w - n) as usize));
            out.push_str(&text);
        } else {
            out.push_str(&text);
        }
    }
    out
}

fn exec(nodes: &[Node], dot: &Value, vars: &mut Vec<(String, Value)>, out: &mut String) -> Res<()> {
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Action(p) => {
                let v = eval_pipe(p, dot, vars)?;
                if p.decl.is_empty() {
                    out.push_str(&print_v(&v));
                }
            }
            Node::If(p, body, els) => {
                let depth = vars.len();
                let v = eval_pipe(p, dot, vars)?;
                if truthy(&v) {
                    exec(body, dot, vars, out)?;
                } else {
                    exec(els, dot, vars, out)?;
                }
                vars.truncate(depth);
            }
            Node::With(p, body, els) => {
                let depth = vars.len();
                let v = eval_pipe(p, dot, vars)?;
                if truthy(&v) {
                    exec(body, v.json(), vars, out)?;
                } else {
                    exec(els, dot, vars, out)?;
                }
                vars.truncate(depth);
            }
            Node::Range(p, body, els) => {
                let depth = vars.len();
                // Evaluate without binding the declarations: range binds per item.
                let plain = Pipe {
                    decl: Vec::new(),
                    cmds: p.cmds.clone(),
                };
                let v = eval_pipe(&plain, dot, vars)?;
                let items: Vec<(Value, Value)> = match v.json() {
                    Value::Array(a) => a
                        .iter()
                        .enumerate()
                        .map(|(i, x)| (Value::from(i), x.clone()))
                        .collect(),
                    Value::Object(o) => {
                        let mut keys: Vec<&String> = o.keys().collect();
                        keys.sort();
                        keys.into_iter()
                            .map(|k| (Value::String(k.clone()), o[k].clone()))
                            .collect()
                    }
                    Value::Null => Vec::new(),
                    other => return eerr(format!("range can't iterate over {}", go_print(other))),
                };
                if items.is_empty() {
                    exec(els, dot, vars, out)?;
                }
                for (k, item) in items {
                    let inner = vars.len();
                    match p.decl.as_slice() {
                        [v] => vars.push((v.clone(), item.clone())),
                        [kn, vn, ..] => {
                            vars.push((kn.clone(), k));
                            vars.push((vn.clone(), item.clone()));
                        }
                        [] => {}
                    }
                    exec(body, &item, vars, out)?;
                    vars.truncate(inner);
                }
                vars.truncate(depth);
            }
        }
    }
    Ok(())
}

/// How the user asked for output (`--format`).
#[derive(Debug, Clone)]
pub enum Format {
    /// The command's default table.
    DefaultTable,
    /// `table TEMPLATE`: header row then rows, aligned by the tabwriter.
    Table(Template),
    /// A raw template, one rendering per item.
    Raw(Template),
    /// `json`: `{{json .}}` per item.
    Json,
}

impl Format {
    pub fn parse(s: Option<&str>) -> Res<Format> {
        let s = match s {
            None | Some("") | Some("table") => return Ok(Format::DefaultTable),
            Some(s) => s,
        };
        if s == "json" {
            return Ok(Format::Json);
        }
        // docker unescapes \t and \n given literally on the command line
        let s = s.replace("\\t", "\t").replace("\\n", "\n");
        if let Some(rest) = s.strip_prefix("table ") {
            return Ok(Format::Table(Template::parse(rest)?));
        }
        Ok(Format::Raw(Template::parse(&s)?))
    }
}

/// Renders items with a format. `headers` maps field names to column titles (for
/// `table`); `default` is the command's default table template.
pub fn render_list(
    format: &Format,
    default: &str,
    headers: &Value,
    items: &[Value],
) -> Res<String> {
    let (tmpl, table) = match format {
        Format::Json => {
            return Ok(items.iter().map(|i| format!("{}\n", go_json(i))).collect());
        }
        Format::Raw(t) => (t.clone(), false),
        Format::Table(t) => (t.clone(), true),
        Format::DefaultTable => (Template::parse(default)?, true),
    };
    let mut text = String::new();
    if table {
        text.push_str(&tmpl.render(headers)?.replace("<no value>", ""));
        text.push('\n');
    }
    for i in items {
        text.push_str(&tmpl.render(i)?);
        text.push('\n');
    }
    if table {
        Ok(crate::tabwriter::TabWriter::default().format(&text))
    } else {
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(t: &str, v: Value) -> String {
        Template::parse(t).unwrap().render(&v).unwrap()
    }

    #[test]
    fn fields_and_nesting() {
        let v = json!({"ID": "abc", "Config": {"Image": "busybox", "Env": ["A=1", "B=2"]}, "N": 3, "F": 1.5});
        assert_eq!(r("{{.ID}}", v.clone()), "abc");
        assert_eq!(r("{{.ID}}\t{{.Config.Image}}", v.clone()), "abc\tbusybox");
        assert_eq!(r("{{.Config.Env}}", v.clone()), "[A=1 B=2]");
        assert_eq!(r("{{.N}} {{.F}}", v.clone()), "3 1.5");
        assert_eq!(r("{{.Nope}}", v.clone()), "<no value>");
        assert_eq!(r("{{.Config.Nope.Deeper}}", v), "<no value>");
    }

    #[test]
    fn json_function() {
        let v = json!({"Labels": {"b": "2", "a": "<1>"}, "S": "x"});
        assert_eq!(
            r("{{json .Labels}}", v.clone()),
            r#"{"a":"\u003c1\u003e","b":"2"}"#
        );
        assert_eq!(r("{{json .S}}", v.clone()), r#""x""#);
        assert_eq!(r("{{.S | json}}", v), r#""x""#);
    }

    #[test]
    fn index_join_and_case() {
        let v = json!({"Labels": {"com.x": "y"}, "L": ["a", "b"], "Name": "web"});
        assert_eq!(r(r#"{{index .Labels "com.x"}}"#, v.clone()), "y");
        assert_eq!(r(r#"{{index .Labels "missing"}}"#, v.clone()), "<no value>");
        assert_eq!(r("{{index .L 1}}", v.clone()), "b");
        assert_eq!(r(r#"{{join .L ","}}"#, v.clone()), "a,b");
        assert_eq!(
            r("{{upper .Name}} {{.Name | lower}} {{title .Name}}", v),
            "WEB web Web"
        );
    }

    #[test]
    fn control_structures() {
        let v = json!({"Running": true, "Mounts": [{"Destination": "/a"}, {"Destination": "/b"}], "Labels": {"k": "v", "a": "b"}, "E": []});
        assert_eq!(r("{{if .Running}}up{{else}}down{{end}}", v.clone()), "up");
        assert_eq!(r("{{if .E}}x{{else if .Running}}y{{end}}", v.clone()), "y");
        assert_eq!(
            r("{{range .Mounts}}{{.Destination}} {{end}}", v.clone()),
            "/a /b "
        );
        assert_eq!(
            r(
                "{{range $k, $v := .Labels}}{{$k}}={{$v}};{{end}}",
                v.clone()
            ),
            "a=b;k=v;"
        );
        assert_eq!(r("{{with .Mounts}}{{len .}}{{end}}", v.clone()), "2");
        assert_eq!(r("{{range .E}}x{{else}}empty{{end}}", v.clone()), "empty");
        assert_eq!(r("{{if eq .Running true}}yes{{end}}", v.clone()), "yes");
        assert_eq!(r("a {{- \" b \" -}} c", v), "a b c");
    }

    #[test]
    fn parse_errors_are_reported() {
        assert!(Template::parse("{{.ID").is_err());
        assert!(Template::parse("{{if .X}}").is_err());
        assert!(Template::parse("{{nosuchfunc .X}}").is_err());
        assert!(Template::parse("{{end}}").is_err());
        let e = Template::parse("{{.A.B}}")
            .unwrap()
            .render(&json!({"A": "str"}))
            .unwrap_err();
        assert!(e.to_string().contains("can't evaluate field B"), "{e}");
    }

    #[test]
    fn format_modes() {
        let items = vec![
            json!({"ID": "a1", "Name": "web"}),
            json!({"ID": "b22", "Name": "db"}),
        ];
        let headers = json!({"ID": "CONTAINER ID", "Name": "NAME"});
        let f = Format::parse(Some("table {{.ID}}\\t{{.Name}}")).unwrap();
        assert_eq!(
            render_list(&f, "", &headers, &items).unwrap(),
            "CONTAINER ID   NAME\na1             web\nb22            db\n"
        );
        let f = Format::parse(Some("{{.ID}}:{{.Name}}")).unwrap();
        assert_eq!(
            render_list(&f, "", &headers, &items).unwrap(),
            "a1:web\nb22:db\n"
        );
        let f = Format::parse(Some("json")).unwrap();
        assert_eq!(
            render_list(&f, "", &headers, &items).unwrap(),
            "{\"ID\":\"a1\",\"Name\":\"web\"}\n{\"ID\":\"b22\",\"Name\":\"db\"}\n"
        );
        let f = Format::parse(None).unwrap();
        assert_eq!(
            render_list(&f, "{{.Name}}\t{{.ID}}", &headers, &items).unwrap(),
            "NAME      CONTAINER ID\nweb       a1\ndb        b22\n"
        );
        assert_eq!(
            printf("%-5s|%3d", &[V::J(json!("ab")), V::J(json!(7))]),
            "ab   |  7"
        );
    }
}
