// Sorts a fixed list of words and prints them with their lengths.
#include <algorithm>
#include <iostream>
#include <string>
#include <vector>

int main() {
    std::vector<std::string> words{"kiln", "fire", "clay", "glaze", "pot"};
    std::sort(words.begin(), words.end());
    for (const auto& word : words) std::cout << word << ':' << word.size() << ' ';
    std::cout << '\n';
}
