# Aqua runtime incident as a ServiceNow record (Postee's `postee.servicenow.incident`): HTML work
# notes (name, category, severity, the incident's `data` as a key/value table, response policy)
# plus the record fields, category "Security incident". Renders what Postee's template renders
# for the same event; where Postee's renders nothing (`data` not a string), this one renders too.
package hooker.servicenow.incident

import data.hooker.servicenow
import rego.v1

title := servicenow.pick(input, "name", "")

data_text := servicenow.pick(input, "data", "")

# Postee's reading of `data` (a JSON object in a string): one [key, value] row per `,"`-separated
# piece, quotes and braces dropped, split at the first colon; `tracee_finding` is left out.
data_rows(text) := [[key, value] |
	some piece in split(text, ",\"")
	clean := replace(replace(replace(piece, "\"", ""), "{", ""), "}", "")
	key := split(clean, ":")[0]
	key != "tracee_finding"
	value := trim_left(substring(clean, count(key), -1), ":")
]

data_html := "data not found" if data_text == ""
else := servicenow.table([], data_rows(data_text)) if is_string(data_text)
else := servicenow.table([], data_rows(json.marshal(data_text)))

severity_text := "unknown" if servicenow.pick(input, "severity_score", "") == ""
else := format_int(input.severity_score, 10) if is_number(input.severity_score)
else := sprintf("%v", [input.severity_score])

category := servicenow.pick(input, "category", "category not found")

result := sprintf(
	"\n<p><b>Name:</b> %s</p>\n<p><b>Category:</b> %s</p>\n<p><b>Severity:</b> %s</p>\n<p><b>Data:</b> %s</p>\n\n<p><b>Resourse policy name:</b> %s</p>\n<p><b>Resourse policy application scopes:</b> %s</p>\n",
	[
		servicenow.pick(input, "name", "name not found"), category, severity_text, data_html,
		servicenow.pick(input, "response_policy_name", "response policy name not found"),
		servicenow.pick(input, "application_scope", "none"),
	],
)

result_date := input.time

result_category := "Security incident"

result_assigned_to := servicenow.only(input.application_scope_owners)

result_assigned_group := servicenow.only(input.application_scope)

result_severity := input.severity_score

result_summary := sprintf("Category: %s\nSeverity: %s", [category, severity_text])

aggregation_pkg := "hooker.vuls.html.aggregation"
