# Aqua image-scan report as Slack Block Kit blocks (what Postee's `postee.vuls.slack` users expect).
package hooker.vuls.slack

import rego.v1

severities := ["critical", "high", "medium", "low", "negligible"]

title := sprintf("%s vulnerability scan report", [input.image])

summary := object.get(input, "vulnerability_summary", {})

escape(s) := replace(replace(replace(s, "&", "&amp;"), "<", "&lt;"), ">", "&gt;")

vulns := [v |
	some resource in object.get(input, "resources", [])
	some vuln in object.get(resource, "vulnerabilities", [])
	v := {
		"id": vuln.name,
		"severity": lower(object.get(vuln, "aqua_severity", object.get(vuln, "nvd_severity", "unknown"))),
		"package": object.get(resource.resource, "name", ""),
		"fix": object.get(vuln, "fix_version", ""),
	}
]

header := {"type": "section", "fields": [
	{"type": "mrkdwn", "text": sprintf("*Image:* %s", [escape(input.image)])},
	{"type": "mrkdwn", "text": sprintf("*Registry:* %s", [escape(object.get(input, "registry", ""))])},
]}

counts := {"type": "section", "fields": [field |
	some sev in severities
	field := {"type": "mrkdwn", "text": sprintf("*%s:* %v", [sev, object.get(summary, sev, 0)])}
]}

rows(sev) := [sprintf("%s  %s  %s", [v.id, escape(v.package), fix_text(v.fix)]) |
	some v in vulns
	v.severity == sev
]

fix_text(fix) := sprintf("(fixed in %s)", [fix]) if fix != ""
else := "(no fix)"

detail_blocks := [block |
	some sev in severities
	lines := rows(sev)
	count(lines) > 0
	block := {"type": "section", "text": {"type": "mrkdwn", "text": substring(sprintf("*%s*\n%s", [sev, concat("\n", lines)]), 0, 3000)}}
]

result := array.concat([header, counts, {"type": "divider"}], detail_blocks)

# The highest severity present.
present := [sev | some sev in severities; object.get(summary, sev, 0) > 0]

result_severity := present[0] if count(present) > 0
else := "none"

aggregation_pkg := "hooker.vuls.slack.aggregation"
