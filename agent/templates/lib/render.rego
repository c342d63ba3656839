# Rendering for the built-in templates. A family library (tracee, trivy, trivyoperator) describes
# an alert as a channel-neutral "card"; the functions here render a card for one channel, with that
# channel's escaping and size limits. Every function tolerates missing card keys.
#
# A card: {
#   "title": string, "lead": string (a paragraph), "url": string,
#   "facts": [[label, value], ...] (empty values are skipped),
#   "counts": {"critical": n, "high": n, "medium": n, "low": n, "unknown": n} (vulnerability reports),
#   "vulns": [{"id", "severity", "pkg", "installed", "fixed", "title", "url"}, ...] (sorted, worst first),
#   "sections": [{"heading": string, "rows": [[label, value], ...]}, ...],
#   "severity": critical|high|medium|low|info, "finding": stable key for de-duplication,
#   "resolved": true when the finding went away (e.g. a deleted report),
#   "entity", "source", "component", "group", "class": strings, "tags": [string, ...],
# }
package hooker.lib.render

import rego.v1

# === Values ===

# Any value as text: strings as they are, null as "", anything else as compact JSON.
text(x) := x if is_string(x)
else := "" if is_null(x)
else := json.marshal(x)

# At most n characters; a cut is marked with "…".
clip(s, n) := s if count(s) <= n
else := concat("", [substring(s, 0, n - 1), "…"])

# Newlines and tabs become spaces (table cells, list items, mrkdwn fields).
one_line(s) := replace(replace(replace(replace(s, "\r\n", " "), "\n", " "), "\r", " "), "\t", " ")

# `key` of `obj` as text ("" when missing or not an object).
field(obj, key) := text(v) if {
	is_object(obj)
	v := obj[key]
} else := ""

# A URL safe to put in a link: http(s), no spaces, quotes or link delimiters.
link_ok(url) if {
	is_string(url)
	regex.match(`^https?://[^ \t\r\n"'<>|\x5b\x5d]+$`, url)
}

# === Escaping, one per channel ===

html(s) := replace(replace(replace(replace(replace(s, "&", "&amp;"), "<", "&lt;"), ">", "&gt;"), "\"", "&quot;"), "'", "&#39;")

# Slack mrkdwn: only &, < and > are control characters.
slack(s) := replace(replace(replace(s, "&", "&amp;"), "<", "&lt;"), ">", "&gt;")

# Inline code in Slack: formatting characters stay literal; a backtick cannot appear inside.
slack_code(s) := "" if s == ""
else := sprintf("`%s`", [replace(slack(s), "`", "'")])

# Jira wiki markup: a backslash escapes markup characters; a literal backslash needs an entity
# (two backslashes are a line break). Newlines would start lists and headings, so none survive.
jira(s) := replace(
	strings.replace_n(
		{"|": "\\|", "{": "\\{", "}": "\\}", "[": "\\[", "]": "\\]", "!": "\\!", "*": "\\*", "_": "\\_", "^": "\\^", "~": "\\~", "#": "\\#"},
		one_line(replace(s, "\\", "\uE000")),
	),
	"\uE000", "&#92;",
)

# A Jira table cell: never empty (an empty cell breaks the row).
jira_cell(s) := " " if s == ""
else := jira(s)

# === Severities ===

# Normalised severity levels, worst first. Actions map them (PagerDuty severity, OpsGenie priority).
levels := ["critical", "high", "medium", "low", "info"]

level_rank := {"critical": 0, "high": 1, "medium": 2, "low": 3, "info": 4}

level_words := {
	"critical": "critical", "high": "high", "error": "high", "medium": "medium", "moderate": "medium",
	"warning": "medium", "low": "low", "negligible": "info", "info": "info", "informational": "info",
	"unknown": "info", "none": "info",
}

# Tracee's 0 (info) .. 4 (critical).
level_numbers := {0: "info", 1: "low", 2: "medium", 3: "high", 4: "critical"}

# Any severity spelling (word or Tracee number) as a level; anything unknown is "info".
level(x) := l if {
	is_string(x)
	l := level_words[lower(x)]
} else := l if {
	is_number(x)
	l := level_numbers[x]
} else := "info"

# The worst level in a list of levels ("info" for an empty list).
highest(list) := worst if {
	ranks := [level_rank[l] | some l in list]
	count(ranks) > 0
	worst := levels[min(ranks)]
} else := "info"

pagerduty_severity := {"critical": "critical", "high": "error", "medium": "warning", "low": "info", "info": "info"}

opsgenie_priority := {"critical": "P1", "high": "P2", "medium": "P3", "low": "P4", "info": "P5"}

# Vulnerability severities as scanners report them, worst first.
vuln_levels := ["critical", "high", "medium", "low", "unknown"]

# Scanner spellings -> vulnerability severity, for lookups without a function call per item.
vuln_level_of := {spelling: l |
	some word, l in {
		"critical": "critical", "high": "high", "medium": "medium", "moderate": "medium",
		"low": "low", "negligible": "low", "unknown": "unknown",
	}
	some spelling in {word, upper(word), concat("", [upper(substring(word, 0, 1)), substring(word, 1, -1)])}
}

vuln_level(x) := l if {
	is_string(x)
	l := lower(x)
	l in vuln_levels
} else := "low" if {
	is_string(x)
	lower(x) == "negligible"
} else := "unknown"

# The level a vulnerability list deserves: its worst vulnerability (unknown counts as info).
vulns_level(counts) := highest([level(l) | some l in vuln_levels; object.get(counts, l, 0) > 0])

# === A card, prepared once per rendering ===

# Renderers below take the prepared card `c`: every part read, typed and bounded once.
prepare(card, limit) := {
	"title": text(object.get(card, "title", "")),
	"lead": text(object.get(card, "lead", "")),
	"url": card_url(card),
	"facts": facts(card),
	"sections": sections(card),
	"has_counts": is_object(object.get(card, "counts", null)),
	"counts_line": counts_text(object.get(card, "counts", {})),
	"counts": {l: count_in(object.get(card, "counts", {}), l) | some l in vuln_levels},
	"shown": [shown_vuln(v) | some v in array.slice(vulns, 0, limit)],
	"left_out": count(vulns) - count(array.slice(vulns, 0, limit)),
} if {
	vulns := [v | some v in array_of(object.get(card, "vulns", [])); is_object(v)]
}

card_url(card) := u if {
	u := object.get(card, "url", "")
	link_ok(u)
} else := ""

# Facts with a value, as [label, one-line value].
facts(card) := [[text(f[0]), v] |
	some f in array_of(object.get(card, "facts", []))
	is_array(f)
	count(f) > 1
	v := one_line(text(f[1]))
	v != ""
]

sections(card) := [{"heading": text(object.get(s, "heading", "")), "rows": rows} |
	some s in array_of(object.get(card, "sections", []))
	is_object(s)
	rows := [[text(r[0]), one_line(text(r[1]))] | some r in array_of(object.get(s, "rows", [])); is_array(r); count(r) > 1]
	count(rows) > 0
]

count_in(counts, l) := n if {
	is_object(counts)
	n := counts[l]
	is_number(n)
} else := 0

# "1 critical, 2 high, 0 medium, 0 low, 0 unknown".
counts_text(counts) := concat(", ", [sprintf("%v %s", [count_in(counts, l), l]) | some l in vuln_levels])

shown_vuln(v) := {
	"id": one_line(field(v, "id")),
	"severity": vuln_level(object.get(v, "severity", "")),
	"pkg": one_line(field(v, "pkg")),
	"installed": one_line(field(v, "installed")),
	"fixed": one_line(field(v, "fixed")),
	"title": one_line(field(v, "title")),
	"url": field(v, "url"),
}

fix_text(v) := sprintf("fixed in %s", [v.fixed]) if v.fixed != ""
else := "no fix yet"

# === Plain text ===

# The title, then the body: what a log line, a terminal or a script reads.
plain(card, limit) := concat("\n", [p | some p in [c.title, text_of(c)]; p != ""]) if {
	c := prepare(card, limit)
}

# The card as plain text, without its title; at most `limit` vulnerabilities.
text_body(card, limit) := text_of(prepare(card, limit))

text_of(c) := concat("\n\n", [p |
	some p in [
		c.lead,
		concat("\n", [sprintf("%s: %s", f) | some f in c.facts]),
		text_vulns(c),
		text_sections(c),
		text_url(c),
	]
	p != ""
])

text_vulns(c) := "" if not c.has_counts
else := concat("\n", array.concat(
	[sprintf("Vulnerabilities: %s", [c.counts_line])],
	array.concat(
		[sprintf("- %s %s %s %s, %s%s", [upper(v.severity), v.id, v.pkg, v.installed, fix_text(v), prefixed(": ", clip(v.title, 120))]) | some v in c.shown],
		[sprintf("… and %v more", [c.left_out]) | c.left_out > 0],
	),
))

text_sections(c) := concat("\n\n", [concat("\n", array.concat([sprintf("%s:", [s.heading])], [sprintf("  %s: %s", [r[0], clip(r[1], 500)]) | some r in s.rows])) |
	some s in c.sections
])

text_url(c) := "" if c.url == ""
else := sprintf("Link: %s", [c.url])

# === Slack (Block Kit; the Slack action adds the title) ===

# Slack allows 3000 characters in a section text and 2000 in a field, 10 fields per section.
slack_blocks(card, limit) := array.concat(
	array.concat(slack_lead(c), slack_facts(c)),
	array.concat(array.concat(slack_vulns(c), slack_sections(c)), slack_link(c)),
) if {
	c := prepare(card, limit)
}

slack_section(mrkdwn) := {"type": "section", "text": {"type": "mrkdwn", "text": clip(mrkdwn, 3000)}}

slack_lead(c) := [] if c.lead == ""
else := [slack_section(slack(clip(c.lead, 2900)))]

slack_facts(c) := [{"type": "section", "fields": chunk} |
	fields := [{"type": "mrkdwn", "text": clip(sprintf("*%s*\n%s", [slack(f[0]), slack(clip(f[1], 1500))]), 2000)} | some f in c.facts]
	some chunk in chunks(fields, 10)
]

slack_vulns(c) := [] if not c.has_counts
else := array.concat(
	array.concat(
		[slack_section(sprintf("*Vulnerabilities:* %s", [c.counts_line]))],
		[slack_section(sprintf("*%s*\n%s", [upper(l), concat("\n", lines)])) |
			some l in vuln_levels
			group := [slack_vuln_line(v) | some v in c.shown; v.severity == l]
			some lines in chunks(group, 10)
		],
	),
	[{"type": "context", "elements": [{"type": "mrkdwn", "text": sprintf("… and %v more vulnerabilities", [c.left_out])}]} | c.left_out > 0],
)

slack_vuln_line(v) := concat(" ", [part |
	some part in [
		"•",
		slack_link_text(v.url, v.id),
		slack_code(v.pkg),
		sprintf("%s → %s", [slack(v.installed), slack(by_default(v.fixed, "no fix"))]),
		slack(clip(v.title, 100)),
	]
	part != ""
])

slack_link_text(url, label) := sprintf("<%s|%s>", [url, slack(label)]) if link_ok(url)
else := slack(label)

slack_sections(c) := [slack_section(sprintf("*%s*\n%s", [slack(s.heading), concat("\n", [sprintf("%s: %s", [slack_code(r[0]), slack_code(clip(r[1], 300))]) | some r in s.rows])])) |
	some s in c.sections
]

slack_link(c) := [] if c.url == ""
else := [slack_section(sprintf("<%s|Open in browser>", [c.url]))]

# === HTML (e-mail and other HTML readers) ===

html_body(card, limit) := concat("", [
	html_lead(c),
	html_facts(c),
	html_vulns(c),
	html_sections(c),
	html_link(c),
]) if {
	c := prepare(card, limit)
}

html_lead(c) := "" if c.lead == ""
else := sprintf("<p>%s</p>", [html(c.lead)])

html_rows(rows) := concat("", [sprintf("<tr><th align=\"left\" valign=\"top\">%s</th><td>%s</td></tr>", [html(r[0]), html(r[1])]) | some r in rows])

html_facts(c) := "" if count(c.facts) == 0
else := sprintf("<table cellpadding=\"4\">%s</table>", [html_rows(c.facts)])

html_vulns(c) := "" if not c.has_counts
else := concat("", [
	"<h3>Vulnerabilities</h3>",
	sprintf("<table cellpadding=\"4\"><tr>%s</tr><tr>%s</tr></table>", [
		concat("", [sprintf("<th>%s</th>", [l]) | some l in vuln_levels]),
		concat("", [sprintf("<td align=\"center\">%v</td>", [c.counts[l]]) | some l in vuln_levels]),
	]),
	html_vuln_table(c),
	html_more(c),
])

html_vuln_table(c) := "" if count(c.shown) == 0
else := sprintf("<table border=\"1\" cellpadding=\"4\" cellspacing=\"0\"><tr><th>Severity</th><th>Vulnerability</th><th>Package</th><th>Installed</th><th>Fixed in</th><th>Title</th></tr>%s</table>", [concat("", [sprintf("<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>", [
	html(v.severity),
	html_link_text(v.url, v.id),
	html(v.pkg),
	html(v.installed),
	html(v.fixed),
	html(clip(v.title, 200)),
]) | some v in c.shown])])

html_more(c) := sprintf("<p>… and %v more vulnerabilities</p>", [c.left_out]) if c.left_out > 0
else := ""

html_link_text(url, label) := sprintf("<a href=\"%s\">%s</a>", [html(url), html(label)]) if link_ok(url)
else := html(label)

html_sections(c) := concat("", [sprintf("<h3>%s</h3><table cellpadding=\"4\">%s</table>", [html(s.heading), html_rows([[r[0], clip(r[1], 500)] | some r in s.rows])]) |
	some s in c.sections
])

html_link(c) := "" if c.url == ""
else := sprintf("<p>See more: %s</p>", [html_link_text(c.url, c.url)])

# === Microsoft Teams (the small HTML subset connector cards render; the action adds the title) ===

teams_body(card, limit) := concat("", [
	html_lead(c),
	teams_facts(c),
	teams_vulns(c),
	teams_sections(c),
	html_link(c),
]) if {
	c := prepare(card, limit)
}

teams_lines(rows) := concat("<br>", [sprintf("<b>%s:</b> %s", [html(r[0]), html(clip(r[1], 500))]) | some r in rows])

teams_facts(c) := "" if count(c.facts) == 0
else := sprintf("<p>%s</p>", [teams_lines(c.facts)])

teams_vulns(c) := "" if not c.has_counts
else := concat("", [
	sprintf("<p><b>Vulnerabilities:</b> %s</p>", [c.counts_line]),
	teams_vuln_list(c),
	html_more(c),
])

teams_vuln_list(c) := "" if count(c.shown) == 0
else := sprintf("<ul>%s</ul>", [concat("", [sprintf("<li><b>%s</b> %s %s %s → %s%s</li>", [
	html(upper(v.severity)),
	html_link_text(v.url, v.id),
	html(v.pkg),
	html(v.installed),
	html(by_default(v.fixed, "no fix")),
	prefixed(": ", html(clip(v.title, 120))),
]) | some v in c.shown])])

teams_sections(c) := concat("", [sprintf("<p><b>%s</b><br>%s</p>", [html(s.heading), teams_lines(s.rows)]) | some s in c.sections])

# === Jira (wiki markup, for the issue description; the action sets the summary from the title) ===

jira_colors := {"critical": "#c00000", "high": "#e0443d", "medium": "#f79421", "low": "#e1c930", "unknown": "#505f79"}

jira_body(card, limit) := concat("\n\n", [p |
	some p in [
		jira(c.lead),
		jira_rows(c.facts),
		jira_vulns(c),
		jira_sections(c),
		jira_link(c),
	]
	p != ""
]) if {
	c := prepare(card, limit)
}

jira_rows(rows) := concat("\n", [sprintf("||%s|%s|", [jira_cell(r[0]), jira_cell(clip(r[1], 1000))]) | some r in rows])

jira_vulns(c) := "" if not c.has_counts
else := concat("\n", array.concat(
	[
		"h3. Vulnerabilities",
		sprintf("||%s||", [concat("||", [upper(l) | some l in vuln_levels])]),
		sprintf("|%s|", [concat("|", [sprintf("{color:%s}%v{color}", [jira_colors[l], c.counts[l]]) | some l in vuln_levels])]),
	],
	array.concat(jira_vuln_table(c), [sprintf("_… and %v more vulnerabilities_", [c.left_out]) | c.left_out > 0]),
))

jira_vuln_table(c) := [] if count(c.shown) == 0
else := array.concat(
	["", "||Severity||Vulnerability||Package||Installed||Fixed in||Title||"],
	[sprintf("|%s|%s|%s|%s|%s|%s|", [
		jira_cell(upper(v.severity)),
		jira_link_text(v.url, v.id),
		jira_cell(v.pkg),
		jira_cell(v.installed),
		jira_cell(v.fixed),
		jira_cell(clip(v.title, 200)),
	]) |
		some v in c.shown
	],
)

jira_link_text(url, label) := sprintf("[%s|%s]", [jira_cell(label), url]) if link_ok(url)
else := jira_cell(label)

jira_sections(c) := concat("\n\n", [sprintf("h3. %s\n%s", [jira(s.heading), jira_rows(s.rows)]) | some s in c.sections])

jira_link(c) := "" if c.url == ""
else := sprintf("See more: [%s]", [c.url])

# === PagerDuty / OpsGenie (one JSON object both actions read) ===

# summary/description, severity (PagerDuty) / priority (OpsGenie), dedup_key / alias,
# event_action (trigger|resolve), entity, source, component, group, class, url, tags and details.
# Lengths fit both APIs' limits.
alert(card, limit) := object.union(
	{k: v | some k, v in alert_strings(card, c); v != ""},
	{
		"severity": pagerduty_severity[l],
		"priority": opsgenie_priority[l],
		"event_action": event_action(card),
		"tags": alert_tags(card),
		"details": first_values(detail_rows(c)),
	},
) if {
	c := prepare(card, limit)
	l := card_level(card)
}

# PagerDuty's event action: "resolve" when the card says the finding went away.
event_action(card) := "resolve" if object.get(card, "resolved", false) == true
else := "trigger"

card_level(card) := l if {
	l := object.get(card, "severity", "info")
	l in levels
} else := "info"

alert_strings(card, c) := {
	"summary": clip(one_line(c.title), 1024),
	"description": clip(text_of(c), 15000),
	"dedup_key": clip(text(object.get(card, "finding", "")), 255),
	"alias": clip(text(object.get(card, "finding", "")), 255),
	"entity": clip(text(object.get(card, "entity", "")), 512),
	"source": clip(by_default(text(object.get(card, "source", "")), "hooker"), 255),
	"component": clip(text(object.get(card, "component", "")), 255),
	"group": clip(text(object.get(card, "group", "")), 255),
	"class": clip(text(object.get(card, "class", "")), 255),
	"url": c.url,
}

# At most 20 distinct, non-empty tags of at most 50 characters (OpsGenie's limits).
alert_tags(card) := array.slice(unique_tags, 0, 20) if {
	all_tags := object.get(card, "tags", [])
	is_array(all_tags)
	tags := [clip(one_line(text(t)), 50) | some t in all_tags; text(t) != ""]
	unique_tags := [t | some i, t in tags; not t in array.slice(tags, 0, i)]
} else := []

# Facts, vulnerability counts and section rows, as [label, value].
detail_rows(c) := array.concat(
	array.concat(c.facts, [["Vulnerabilities", c.counts_line] | c.has_counts]),
	[[sprintf("%s.%s", [s.heading, r[0]]), r[1]] | some s in c.sections; some r in s.rows],
)

# A string map from [label, value] rows; the first value of a label wins.
first_values(rows) := {label: value |
	some label in {r[0] | some r in rows}
	value := [clip(r[1], 500) | some r in rows; r[0] == label][0]
}

# === Helpers ===

# x when it is an array, else [] (iterating anything else is an error).
array_of(x) := x if is_array(x)
else := []

by_default(s, d) := d if s == ""
else := s

# s after prefix p, or "" when s is empty.
prefixed(p, s) := "" if s == ""
else := concat("", [p, s])

# Splits an array into arrays of at most n items.
chunks(a, n) := [] if count(a) == 0
else := [array.slice(a, i, i + n) | some i in numbers.range_step(0, count(a) - 1, n)]

# === Aggregation (the input is an array of {title, description, url, severity, finding, ...}) ===

aggregate_items(items) := [i | some i in items; is_object(i)] if is_array(items)
else := []

aggregate_title(items) := render_title if {
	list := aggregate_items(items)
	count(list) > 1
	render_title := sprintf("%v events: %s", [count(list), field(list[0], "title")])
} else := first_title if {
	list := aggregate_items(items)
	count(list) == 1
	first_title := field(list[0], "title")
} else := ""

aggregate_level(items) := highest([level(object.get(i, "severity", "")) | some i in aggregate_items(items)])
