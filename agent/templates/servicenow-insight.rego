# Aqua (CSPM) insight as a ServiceNow record (Postee's `postee.servicenow.insight`): HTML work notes
# (insight, resource, vulnerability and sensitive-data evidence, recommendation) plus the record
# fields, category "Security insight". Renders what Postee's template renders for the same event;
# where Postee's renders nothing (a missing field, remediations it does not combine), this one
# shows "" or the first remediation given.
package hooker.servicenow.insight

import data.hooker.servicenow
import rego.v1

insight := object.get(input, "insight", {})

resource := object.get(input, "resource", {})

evidence := object.get(input, "evidence", {})

server_url := trim_suffix(servicenow.pick(servicenow.pick(input, "postee", {}), "AquaServer", ""), "/#/images/")

insight_id := servicenow.pick(insight, "id", "")

resource_id := servicenow.pick(resource, "id", "")

title := servicenow.pick(insight, "description", "")

href := sprintf("%s/ah/#/insights/%s/resource/%s", [server_url, urlquery.encode(sprintf("%v", [insight_id])), urlquery.encode(sprintf("%v", [resource_id]))])

link_text := sprintf("%s/ah/#/insights/%s/resource/%s", [server_url, insight_id, resource_id])

priority_text := "critical" if insight.priority == 4
else := "high" if insight.priority == 3
else := "medium" if insight.priority == 2
else := "low" if insight.priority == 1
else := "negligible" if insight.priority == 0
else := "unknown"

# Postee's choice among the three remediations, extended to every combination: the
# vulnerabilities' (when not null), else the sensitive data's, else the malware's (when not "").
remediation := value if {
	value := object.get(evidence, "vulnerabilities_remediation", null)
	value != null
} else := value if {
	value := object.get(evidence, "sensitive_data_remediation", "")
	value != ""
} else := value if {
	value := object.get(evidence, "malware_remediation", "")
	value != ""
} else := "No Recommendation"

list(obj, key) := l if {
	l := obj[key]
	is_array(l)
} else := []

vulnerabilities := [[v.name, v.severity, servicenow.pick(v, "package_name", "none"), servicenow.pick(v, "current_version", "none"), servicenow.pick(v, "fix_version", "none")] |
	some v in list(evidence, "vulnerabilities")
]

vulnerabilities_html := "" if count(vulnerabilities) == 0
else := sprintf("\n<p>Vulnerabilities</p>\n%s\n", [servicenow.table(["Vulnerability ID", "Severity", "Resource name", "Installed version", "Fix version"], vulnerabilities)])

sensitive_data := [[d.file_type, d.file_path, d.image] | some d in list(evidence, "sensitive_data")]

sensitive_data_html := "" if count(sensitive_data) == 0
else := sprintf("\n<p>Sensitive data</p>\n%s\n", [servicenow.table(["File Type", "File Path", "Image"], sensitive_data)])

link_html := "" if server_url == ""
else := sprintf("<a href='%s'>%s</a>", [href, link_text])

result := sprintf(
	"\n<!-- Insight Details -->\n<h2> <i>Insight Details:</i> </h2>\n<p><b>Insight ID:</b> %s</p>\n<p><b>Description:</b> %s</p>\n<p><b>Impact:</b> %s</p>\n<p><b>Severity:</b> %s</p>\n<p><b>Found Date:</b> %s</p>\n<p><b>Last Scan:</b> %s</p>\n<p><b>URL:</b> %s</p>\n<!-- TODO  -->\n<!-- Resourse Details -->\n<h2> <i>Resourse Details:</i> </h2>\n<p><b>Resourse ID:</b> %s</p>\n<p><b>Resourse Name:</b> %s</p>\n<p><b>ARN:</b> %s</p>\n<p><b>Extra Info:</b> %s</p>\n<!-- Evidence -->\n<h2> <i>Evidence:</i> </h2>\n<!-- Vulnerabilities -->\n%s\n<!-- Sensitive data -->\n%s\n<!-- Recommendation -->\n<h2> <i>Recommendation:</i> </h2>\n%s\n<p><b>Resourse policy name:</b> %s</p>\n<p><b>Resourse policy application scopes:</b> %s</p>\n",
	[
		insight_id, title, servicenow.pick(insight, "impact", ""), priority_text,
		servicenow.pick(resource, "found_date", ""), servicenow.pick(resource, "last_scanned", ""),
		link_html,
		resource_id, servicenow.pick(resource, "name", ""), servicenow.pick(resource, "arn", ""),
		servicenow.pick(resource, "steps", ""),
		vulnerabilities_html, sensitive_data_html, remediation,
		servicenow.pick(input, "response_policy_name", ""),
		servicenow.pick(input, "application_scope", "none"),
	],
)

result_category := "Security insight"

result_assigned_to := servicenow.only(input.application_scope_owners)

result_assigned_group := servicenow.only(input.application_scope)

result_severity := insight.priority

result_summary := sprintf(
	"Insight ID: %s\nDescription: %s\nImpact: %s\nSeverity: %s\nFound Date: %s\nLast Scan: %s\nURL: %s",
	[
		insight_id, title, servicenow.pick(insight, "impact", ""), priority_text,
		servicenow.pick(resource, "found_date", ""), servicenow.pick(resource, "last_scanned", ""),
		summary_link,
	],
)

summary_link := "" if server_url == ""
else := link_text

aggregation_pkg := "hooker.vuls.html.aggregation"
