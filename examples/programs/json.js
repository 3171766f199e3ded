// Builds an object and prints it as JSON.
const pottery = { kiln: "ready", temperatureC: 1240, pieces: ["bowl", "cup", "vase"] };
console.log(JSON.stringify(pottery));
