# Aqua image-scan report as HTML (what Postee's `postee.vuls.html` users expect): image, registry,
# a severity summary, assurance results, and vulnerabilities grouped by severity with fixes.
package hooker.vuls.html

import rego.v1

severities := ["critical", "high", "medium", "low", "negligible"]

title := sprintf("%s vulnerability scan report", [input.image])

aqua_url := url if {
	base := object.get(input, ["postee", "AquaServer"], "")
	base != ""
	url := sprintf("%s%s/%s", [base, urlquery.encode(object.get(input, "registry", "")), urlquery.encode(input.image)])
} else := ""

url := aqua_url

summary := object.get(input, "vulnerability_summary", {})

count_of(sev) := object.get(summary, sev, 0)

summary_rows := concat("", [sprintf("<tr><td>%s</td><td>%v</td></tr>", [sev, count_of(sev)]) | some sev in severities])

vulns := [v |
	some resource in object.get(input, "resources", [])
	some vuln in object.get(resource, "vulnerabilities", [])
	v := {
		"id": vuln.name,
		"severity": lower(object.get(vuln, "aqua_severity", object.get(vuln, "nvd_severity", "unknown"))),
		"package": object.get(resource.resource, "name", ""),
		"version": object.get(resource.resource, "version", ""),
		"fix": object.get(vuln, "fix_version", ""),
		"url": object.get(vuln, "nvd_url", ""),
	}
]

vuln_rows(sev) := concat("", [sprintf("<tr><td><a href=\"%s\">%s</a></td><td>%s</td><td>%s</td><td>%s</td></tr>", [v.url, v.id, v.package, v.version, v.fix]) |
	some v in vulns
	v.severity == sev
])

sections := concat("", [section |
	some sev in severities
	rows := vuln_rows(sev)
	rows != ""
	section := sprintf("<h3>%s severity</h3><table><tr><th>Vulnerability</th><th>Package</th><th>Installed</th><th>Fixed in</th></tr>%s</table>", [sev, rows])
])

assurance_rows := concat("", [sprintf("<tr><td>%s</td><td>%s</td></tr>", [c.policy_name, c.control]) |
	some c in object.get(object.get(input, "image_assurance_results", {}), "checks_performed", [])
])

result := sprintf(
	"<p>Image name: %s</p><p>Registry: %s</p><p>%s</p><h3>Vulnerability summary</h3><table>%s</table><h3>Assurance controls</h3><table><tr><th>Policy</th><th>Control</th></tr>%s</table>%s%s",
	[
		input.image, object.get(input, "registry", ""),
		compliance, summary_rows, assurance_rows, sections, see_more,
	],
)

compliance := "Image is non-compliant" if object.get(object.get(input, "image_assurance_results", {}), "disallowed", false) == true
else := "Image is compliant"

see_more := sprintf("<p>See more: <a href=\"%s\">%s</a></p>", [aqua_url, aqua_url]) if aqua_url != ""
else := ""

# The highest severity present.
present := [sev | some sev in severities; count_of(sev) > 0]

result_severity := present[0] if count(present) > 0
else := "none"

aggregation_pkg := "hooker.vuls.html.aggregation"
