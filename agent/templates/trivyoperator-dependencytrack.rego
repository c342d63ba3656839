# Renders a trivy-operator SbomReport (bare, or in its {verb, operatorObject} wrapper) as its
# CycloneDX BOM for the dependencytrack action, titled with the project `<repository>:<tag>`.
# Postee's `postee.trivyoperator.dependencytrack`.
package hooker.trivyoperator.dependencytrack

import data.hooker.lib.trivyoperator
import rego.v1

title := trivyoperator.image

result := trivyoperator.report.components if is_object(trivyoperator.report.components)
else := {"bomFormat": "CycloneDX", "specVersion": "1.4", "components": []}

result_severity := "info"

result_finding := trivyoperator.finding

# The key the paging and ticketing actions de-duplicate on.
result_dedup_key := trivyoperator.finding
