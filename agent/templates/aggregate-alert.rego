# Aggregation for the PagerDuty / OpsGenie templates: one alert for several, at the worst
# severity, keyed by the findings it covers, listing every message's title.
package hooker.aggregate.alert

import data.hooker.lib.render
import rego.v1

title := render.aggregate_title(input)

items := render.aggregate_items(input)

bodies := [b | some item in items; b := body(item)]

body(item) := d if {
	d := item.description
	is_object(d)
} else := {}

first_body := bodies[0] if count(bodies) > 0
else := {}

level := render.aggregate_level(input)

findings := sort({f | some item in items; f := render.field(item, "finding"); f != ""})

lines := [sprintf("[%s] %s", [render.level(object.get(item, "severity", "")), render.one_line(render.field(item, "title"))]) | some item in items]

result := render.alert(
	{
		"title": title,
		"lead": concat("\n", array.slice(lines, 0, 100)),
		"severity": level,
		"finding": concat(",", findings),
		"source": render.field(first_body, "source"),
		"tags": [t | some b in bodies; tags := object.get(b, "tags", []); is_array(tags); some t in tags],
	},
	0,
)

result_severity := level

# The key the paging actions de-duplicate on: the findings covered.
result_dedup_key := render.clip(concat(",", findings), 255) if count(findings) > 0
