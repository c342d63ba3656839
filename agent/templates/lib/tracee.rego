# Helpers over Tracee events in all three JSON shapes, loaded into every route and template:
#   A: tracee-rules Finding {"Data","Context","SigMetadata"} (Tracee <= v0.10, Postee's examples)
#   B: trace.Event (Tracee v0.11 .. v0.24: eventName, metadata.Properties)
#   C: v1beta1.Event (Tracee main and gRPC: name, workload, threat)
# Detections are recognised by their signature metadata / threat, never by event id.
package hooker.lib.tracee

import rego.v1

is_detection if input.SigMetadata
is_detection if input.metadata.Properties.signatureID
is_detection if input.threat

is_tracee if is_detection
is_tracee if input.eventName
is_tracee if {
	input.name
	input.workload
}

signature_id := input.SigMetadata.ID if input.SigMetadata.ID
else := input.metadata.Properties.signatureID if input.metadata.Properties.signatureID
else := input.threat.properties.signatureID if input.threat.properties.signatureID
else := input.threat.properties.id if input.threat.properties.id
else := ""

signature_name := input.SigMetadata.Name if input.SigMetadata.Name
else := input.metadata.Properties.signatureName if input.metadata.Properties.signatureName
else := input.threat.name if input.threat.name
else := event_name

event_name := input.eventName if input.eventName
else := input.name if is_string(input.name)
else := input.SigMetadata.EventName if input.SigMetadata.EventName
else := ""

description := input.SigMetadata.Description if input.SigMetadata.Description
else := input.metadata.Description if input.metadata.Description
else := input.threat.description if input.threat.description
else := ""

# Severity 0 (info) .. 4 (critical); -1 when the event carries none.
severity := to_number(input.SigMetadata.Properties.Severity) if input.SigMetadata.Properties.Severity != null
else := to_number(input.metadata.Properties.Severity) if input.metadata.Properties.Severity != null
else := to_number(input.threat.severity) if input.threat.severity != null
else := -1

severity_names := ["info", "low", "medium", "high", "critical"]

severity_name := severity_names[severity] if severity >= 0
else := "unknown"

mitre_technique := input.metadata.Properties.Technique if input.metadata.Properties.Technique
else := input.threat.mitre.technique.name if input.threat.mitre.technique.name
else := input.SigMetadata.Properties["MITRE ATT&CK"] if input.SigMetadata.Properties["MITRE ATT&CK"]
else := ""

mitre_category := input.metadata.Properties.Category if input.metadata.Properties.Category
else := input.threat.mitre.tactic.name if input.threat.mitre.tactic.name
else := ""

context := input.Context if input.SigMetadata
else := input

process_name := context.processName if context.processName
else := input.workload.process.thread.name if input.workload.process.thread.name
else := ""

host_name := context.hostName if context.hostName
else := ""

pod_name := context.kubernetes.podName if context.kubernetes.podName
else := context.podName if context.podName
else := input.workload.k8s.pod.name if input.workload.k8s.pod.name
else := ""

pod_namespace := context.kubernetes.podNamespace if context.kubernetes.podNamespace
else := context.podNamespace if context.podNamespace
else := input.workload.k8s.namespace.name if input.workload.k8s.namespace.name
else := ""

container_id := context.container.id if context.container.id
else := context.containerId if context.containerId
else := input.workload.container.id if input.workload.container.id
else := ""

container_image := context.container.image if context.container.image
else := context.containerImage if context.containerImage
else := input.workload.container.image.name if input.workload.container.image.name
else := ""

# Arguments as name -> value, from `args` (A, B) or `data` (C).
args[a.name] := a.value if some a in context.args

args[d.name] := v if {
	some d in input.data
	some k, v in d
	k != "name"
}
