// A tiny SVG sparkline: a polyline of the last samples on a 0-100 scale.

const SVG = "http://www.w3.org/2000/svg";

/** The number of samples a sparkline keeps. */
export const SAMPLES = 60;

/** Creates an empty sparkline titled `label`. */
export function createSparkline(label, className) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${SAMPLES - 1} 100`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("class", `sparkline ${className}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  const area = document.createElementNS(SVG, "polygon");
  area.setAttribute("class", "area");
  const line = document.createElementNS(SVG, "polyline");
  line.setAttribute("class", "line");
  line.setAttribute("vector-effect", "non-scaling-stroke");
  svg.append(area, line);
  return svg;
}

/** Draws `values` (0-100, oldest first, at most SAMPLES) into `svg`. */
export function drawSparkline(svg, values) {
  // One sample draws as a flat line across the last step.
  if (values.length === 1) values = [values[0], values[0]];
  const offset = SAMPLES - values.length;
  const points = values.map((value, i) => {
    const clamped = Math.max(0, Math.min(100, value));
    return `${offset + i},${(100 - clamped).toFixed(1)}`;
  });
  svg.querySelector(".line").setAttribute("points", points.join(" "));
  svg.querySelector(".area").setAttribute(
    "points",
    points.length ? `${offset},100 ${points.join(" ")} ${SAMPLES - 1},100` : "",
  );
}
