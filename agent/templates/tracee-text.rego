# Plain-text message for a Tracee detection or event (any of the three JSON shapes).
package hooker.tracee.text

import data.hooker.lib.tracee
import rego.v1

title := sprintf("Tracee Detection - %s", [tracee.signature_name]) if tracee.is_detection
else := sprintf("Tracee Event - %s", [tracee.event_name])

lines := [line |
	some pair in [
		["Signature", tracee.signature_id],
		["Severity", sev],
		["Description", tracee.description],
		["MITRE", mitre],
		["Process", tracee.process_name],
		["Host", tracee.host_name],
		["Pod", pod],
		["Container", tracee.container_id],
		["Image", tracee.container_image],
	]
	pair[1] != ""
	line := sprintf("%s: %s", pair)
]

sev := "" if tracee.severity < 0
else := sprintf("%s (%d)", [tracee.severity_name, tracee.severity])

mitre := trim(concat(" / ", [x | some x in [tracee.mitre_category, tracee.mitre_technique]; x != ""]), " /")

pod := "" if tracee.pod_name == ""
else := sprintf("%s/%s", [tracee.pod_namespace, tracee.pod_name])

result := concat("\n", array.concat([title], lines))

aggregation_pkg := "hooker.aggregate.text"
