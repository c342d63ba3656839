# Aqua image, serverless-function or host scan report as a ServiceNow record (Postee's
# `postee.servicenow`): HTML work notes (severity summary, assurance controls, vulnerabilities by
# severity) plus the record fields (`result_date`, `result_category`, `result_subcategory`,
# `result_severity` 1 to 3, `result_summary`, `result_assigned_to`, `result_assigned_group`).
# Renders what Postee's template renders for the same event; where Postee's renders nothing (a
# missing `scan_options`, `image` or summary), this one falls back to "No", "" or 0.
# The HTML table helpers here are shared with `hooker.servicenow.incident` and `.insight`.
package hooker.servicenow

import rego.v1

# === Shared with the other ServiceNow templates ===

# obj[key] unless it is missing or false (as Postee's `with_default`: "" and null are kept).
pick(obj, key, default_value) := value if {
	value := obj[key]
	value != false
} else := default_value

# An HTML table; `headers` may be empty (no header row).
table(headers, rows) := sprintf("\n<TABLE border='1' style='width: 100%%; border-collapse: collapse;'>\n%s\n</TABLE>\n", [concat("", array.concat([header_row(headers)], [row(cells) | some cells in rows]))])

header_row(headers) := "" if count(headers) == 0
else := row_of([sprintf("<TH style='padding: 5px;'>%s</TH>\n", [h]) | some h in headers])

row(cells) := row_of([sprintf("<TD style='padding: 5px;'>%s</TD>\n", [c]) | some c in cells])

row_of(parts) := sprintf("\n<TR>\n%s\n</TR>", [concat("", parts)])

# The one application scope owner (or group), "" when there are several (undefined when none).
only(list) := list[0] if {
	is_array(list)
	count(list) == 1
} else := "" if {
	is_array(list)
	count(list) > 1
}

# === This template ===

server_url := trim_suffix(pick(pick(input, "postee", {}), "AquaServer", ""), "images/")

image := pick(input, "image", "")

registry := pick(input, "registry", "")

summary := object.get(input, "vulnerability_summary", {})

count_of(level) := n if {
	n := object.get(summary, level, 0)
	is_number(n)
} else := 0

report_type := "function" if input.entity_type == 1
else := "vm" if input.entity_type == 2
else := "image"

title := sprintf("Aqua security | %s | %s | Scan report", [report_type, image])

# Postee's links: functions/<registry>/<image>, infrastructure/<image>/node, image/<registry>/<image>.
href := sprintf("%sfunctions/%s/%s", [server_url, urlquery.encode(registry), urlquery.encode(image)]) if report_type == "function"
else := sprintf("%sinfrastructure/%s/node", [server_url, urlquery.encode(image)]) if report_type == "vm"
else := sprintf("%simage/%s/%s", [server_url, urlquery.encode(registry), urlquery.encode(image)])

link_text := sprintf("%sfunctions/%s/%s", [server_url, registry, image]) if report_type == "function"
else := sprintf("%sinfrastructure/%s/node", [server_url, image]) if report_type == "vm"
else := sprintf("%simage/%s/%s", [server_url, registry, image])

url := "" if server_url == ""
else := href

yes_no(flag) := "Yes" if flag == true
else := "No"

malware := yes_no(object.get(input, ["scan_options", "scan_malware"], false))

sensitive_data := yes_no(object.get(input, ["scan_options", "scan_sensitive_data"], false))

colours := [
	["critical", "#c00000"], ["high", "#e0443d"], ["medium", "#f79421"],
	["low", "#e1c930"], ["negligible", "green"],
]

severity_stats := [[level, sprintf("<span style='color:%s'>%s</span>", [colour, format_int(count_of(level), 10)])] |
	some pair in colours
	[level, colour] := pair
]

checks := object.get(input, ["image_assurance_results", "checks_performed"], [])

controls := [[format_int(i + 1, 10), item.control, item.policy_name, status(item)] |
	is_array(checks)
	some i, item in checks
]

status(item) := "FAIL" if item.failed
else := "PASS"

controls_html := "" if count(controls) == 0
else := sprintf("\n<h3>Assurance controls</h3>\n%s\n", [table(["#", "Control", "Policy Name", "Status"], controls)])

resources := r if {
	r := input.resources
	is_array(r)
} else := []

# [id, package, installed, fixed] of every vulnerability of `level`, in report order.
vulnerabilities(level) := [[vuln.name, pick(item.resource, "name", "none"), pick(item.resource, "version", "none"), pick(vuln, "fix_version", "none")] |
	some item in resources
	is_array(item.vulnerabilities)
	some vuln in item.vulnerabilities
	vuln.aqua_severity == level
]

vulnerabilities_html(heading, level) := "" if count(vulnerabilities(level)) == 0
else := sprintf("\n<h3>%s severity vulnerabilities</h3>\n%s\n", [heading, table(["Vulnerability ID", "Resource name", "Installed version", "Fix version"], vulnerabilities(level))])

see_more := "" if server_url == ""
else := sprintf("<p><b>See more:</b> <a href='%s'>%s</a></p>", [href, link_text])

result := sprintf(
	"\n<p><b>Name:</b> %s</p>\n<p><b>Registry:</b> %s</p>\n<p><b>Malware found:</b> %s</p>\n<p><b>Sensitive data found:</b> %s</p>\n<!-- Stats -->\n<h3> Vulnerability summary </h3>\n%s\n<!-- Assurance controls -->\n%s\n<!-- Critical severity vulnerabilities -->\n%s\n<!-- High severity vulnerabilities -->\n%s\n<!-- Medium severity vulnerabilities -->\n%s\n<!-- Low severity vulnerabilities -->\n%s\n<!-- Negligible severity vulnerabilities -->\n%s\n<p><b>Resourse policy name:</b> %s</p>\n<p><b>Resourse policy application scopes:</b> %s</p>\n%s\n",
	[
		image, registry, malware, sensitive_data,
		table([], severity_stats),
		controls_html,
		vulnerabilities_html("Critical", "critical"),
		vulnerabilities_html("High", "high"),
		vulnerabilities_html("Medium", "medium"),
		vulnerabilities_html("Low", "low"),
		vulnerabilities_html("Negligible", "negligible"),
		pick(input, "response_policy_name", ""),
		pick(input, "application_scope", "none"),
		see_more,
	],
)

result_date := input.scan_started.seconds

result_category := "Serverless functions Scanning" if report_type == "function"
else := "Security - VM Scan results" if report_type == "vm"
else := "Security Image Scan results"

result_subcategory := "Security incident"

result_assigned_to := only(input.application_scope_owners)

result_assigned_group := only(input.application_scope)

# ServiceNow's impact and urgency: 1 (high) with a critical vulnerability, 2 with a high one, else 3.
result_severity := 1 if count_of("critical") > 0
else := 2 if count_of("high") > 0
else := 3

result_summary := sprintf(
	"Name: %s\nRegistry: %s\nMalware found: %s\nSensitive data found: %s\n\nvulnerabilities:\n*   critical: %d,\n*   high: %d,\n*   medium: %d,\n*   low: %d,\n*   negligible: %d\n\n%s",
	[
		image, registry, malware, sensitive_data,
		count_of("critical"), count_of("high"), count_of("medium"), count_of("low"), count_of("negligible"),
		summary_link,
	],
)

summary_link := "" if server_url == ""
else := sprintf("See more: %s", [link_text])

aggregation_pkg := "hooker.vuls.html.aggregation"
