# Aqua image-scan report as a CycloneDX 1.1 BOM with vulnerabilities (Postee's
# `postee.vuls.cyclondx`, for Nexus IQ): one component per resource.
package hooker.vuls.cyclonedx

import rego.v1

title := input.image

field(obj, key, fallback) := object.get(obj, key, fallback)

vulnerability_xml(v) := sprintf(
	`
        <v:vulnerability>
          <v:id>%s</v:id>
          <v:source name="NVD">
            <v:url>%s</v:url>
          </v:source>
          <v:ratings>
            <v:rating>
              <v:score>
                <v:base>%v</v:base>
                <v:impact>%v</v:impact>
                <v:exploitability>%v</v:exploitability>
              </v:score>
              <v:severity>%s</v:severity>
              <v:method>%s</v:method>
              <v:vector>%s</v:vector>
            </v:rating>
          </v:ratings>
          <v:recommendations>
            <v:recommendation>%s</v:recommendation>
          </v:recommendations>
        </v:vulnerability>`,
	[
		field(v, "name", ""), field(v, "nvd_url", ""),
		field(v, "aqua_score", ""), field(v, "aqua_score", ""), field(v, "aqua_score", ""),
		field(v, "aqua_severity", ""), field(v, "aqua_scoring_system", ""),
		field(v, "aqua_vectors", ""), field(v, "solution", "No solution available"),
	],
)

component_xml(item) := sprintf(
	`    <component type="application">
      <name>%s</name>
      <version>%s</version>
      <licenses>
        <license>
          <id>%s</id>
        </license>
      </licenses>
      <v:vulnerabilities>%s</v:vulnerabilities>
    </component>`,
	[
		field(item.resource, "name", "none"),
		field(item.resource, "version", "none"),
		# Nexus IQ limits the licence field.
		substring(field(item.resource, "license", "not provided"), 0, 32),
		concat("", [vulnerability_xml(v) | some v in field(item, "vulnerabilities", [])]),
	],
)

result := sprintf(
	`<?xml version="1.0"?>
<bom serialNumber="urn:uuid:3e671687-395b-41f5-a30f-a58921a69b79" version="1"
     xmlns="http://cyclonedx.org/schema/bom/1.1"
     xmlns:v="http://cyclonedx.org/schema/ext/vulnerability/1.0">
  <components>
  %s
  </components>
</bom>`,
	[concat("", [component_xml(item) | some item in object.get(input, "resources", [])])],
)
